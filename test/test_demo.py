"""The README's main command: photos -> skp-train -> bag -> node replay -> reports."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest

from ros_support import REPO_ROOT, child_env

pytestmark = pytest.mark.ros


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "offline_tools.demo", "--out", str(out), "--steps", "4",
           "--frames", "8", "--no-progress"]  # fmt: skip
    proc = subprocess.run(
        cmd, env=child_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "demo_summary.json").read_text())
    assert (out / "train" / "bundle" / "bundle.json").is_file()
    assert (out / "train" / "report" / "index.html").is_file()
    report = json.loads((out / "replay" / "report.json").read_text())
    assert report["frames_published"] == 8
    # Lockstep replay: every frame is answered however loaded the machine is (how many a
    # real-time stream keeps up with is skp-node-bench's business).
    assert report["mode"]["lockstep"] and report["lockstep_timeouts"] == 0
    assert report["matched"] == 8 and report["dropped"] == 0
    assert report["unmatched_outputs"] == 0
    # The sweep bag knows its camera motion: the replay measures keypoints against it.
    tracking = report["tracking_error_px"]
    assert tracking["pairs"] == 7 and summary["tracking_error_px"] == tracking["p50"]
    assert "tracking error: median" in proc.stdout
    strip = cv2.imread(summary["overlay_strip"])
    assert strip is not None and strip.size > 0
    assert "training report" in proc.stdout
