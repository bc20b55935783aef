"""skp-node-bench end to end on the tiny model, and the node's split of detector vs overhead time.

The benchmark runs as its own process (it starts the node itself, in the loopback-only
environment) for two short rates; the test checks the shape of what it prints and that every
frame the node processed came back matched by stamp. Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys

import pytest

from ros_support import REPO_ROOT, child_env
from skp_ros.diagnostics import FrameStats, build_status
from skp_ros.node_benchmark import (
    FRAME_COLUMNS,
    MICRO_LABELS,
    TIME_COLUMNS,
    backlog_verdict,
    parse_rates,
)

RATES = (3.0, 40.0)  # well below, and above, the tiny model's processing rate on a CPU
SECONDS = 2.0
BENCH_TIMEOUT_S = 150.0  # a ceiling for a loaded machine; the run takes ~20 s here


def _table(lines: list[str], title: str, columns: tuple[str, ...]) -> list[list[str]]:
    """The data rows under `title`, after checking its header row."""
    start = lines.index(title)
    assert lines[start + 1].split() == list(columns)
    rows = [line.split() for line in lines[start + 2 : start + 2 + len(RATES)]]
    assert all(len(row) == len(columns) for row in rows), rows
    return rows


def _finite(text: str) -> float:
    value = float(text)
    assert math.isfinite(value), text
    return value


def test_frame_stats_split_detector_and_overhead_time():
    stats = FrameStats()
    stats.processed(0.010, 0.007)
    stats.processed(0.020, 0.015)
    snap = stats.snapshot()
    assert snap.processing_mean_ms == pytest.approx(15.0)
    assert snap.detector_mean_ms == pytest.approx(11.0)
    assert snap.overhead_mean_ms == pytest.approx(4.0)
    values = {kv.key: kv.value for kv in build_status("n", "cpu", "active", True, snap, {}).values}
    assert values["detector_time_mean_ms"] == "11.00"
    assert values["overhead_time_mean_ms"] == "4.00"
    empty = build_status("n", "cpu", "active", True, stats.snapshot(), {}).values
    assert {kv.key: kv.value for kv in empty}["overhead_time_mean_ms"] == "n/a"


def test_rates_and_backlog_verdict():
    assert parse_rates("2, 10,auto") == [2.0, 10.0, "auto"]
    for bad in ("0", "-1", "fast", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="rate"):
            parse_rates(bad)
    assert backlog_verdict([50.0] * 9)[2] == "flat"
    assert backlog_verdict([50.0 * (i + 1) for i in range(9)])[2] == "GROWS"
    assert backlog_verdict([50.0, 60.0])[2] == "n/a"


@pytest.mark.ros
@pytest.mark.slow
def test_node_bench_prints_complete_tables():
    rates = ",".join(f"{r:g}" for r in RATES)
    argv = [sys.executable, "-m", "skp_ros.node_benchmark", "--rates", rates]
    argv += ["--seconds", str(SECONDS), "--warmup", "3", "--micro-seconds", "0.02"]
    done = subprocess.run(
        argv,
        env=child_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S,
    )
    out = done.stdout
    assert done.returncode == 0, f"{out}\n{done.stderr}"
    assert "discovery=LOCALHOST" in out
    lines = out.splitlines()

    frames = _table(lines, "frames per input rate", FRAME_COLUMNS)
    for rate, row in zip(RATES, frames, strict=True):
        cells = dict(zip(FRAME_COLUMNS, row, strict=True))
        assert _finite(cells["rate_Hz"]) == pytest.approx(rate)
        for key in ("in_Hz", "out_Hz"):
            _finite(cells[key])
        sent, received, processed, dropped, bad, lost, matched = (
            int(cells[k])
            for k in ("sent", "received", "processed", "dropped", "bad", "lost", "matched")
        )
        assert sent == round(rate * SECONDS)
        assert lost >= 0
        assert processed + dropped + bad == received
        assert processed > 0
        assert matched == processed, "a processed frame's keypoints were not matched by stamp"

    times = _table(lines, "latency and node time per input rate (ms)", TIME_COLUMNS)
    for row in times:
        cells = dict(zip(TIME_COLUMNS, row, strict=True))
        for key in (*TIME_COLUMNS[:6], "p50-det"):
            _finite(cells[key])
        assert cells["under_3ms"] in ("yes", "NO")
        assert cells["backlog"] in ("flat", "GROWS")

    for label in MICRO_LABELS:
        line = next(line for line in lines if line.startswith(label))
        assert _finite(line.removeprefix(label)) > 0
    assert any(line.startswith("overhead (node time - detector time)") for line in lines)
    assert any(line.startswith("backlog: ") for line in lines)
