"""Every console script answers --help and argument errors at once, without the heavy stack.

`skp-train --help` once took 11 s importing torch and diffusers. Each script runs here as a
fresh process, exactly as its console entry point calls it, and reports which heavy modules
got imported.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "matplotlib", "scipy", "pandas", "safetensors")
ENTRY = re.compile(r'"([\w-]+) = ([\w.]+):(\w+)"')
SCRIPTS = ENTRY.findall((ROOT / "setup.py").read_text())
ARGPARSE = {"skp-train", "skp-bench", "skp-replay", "skp-node-bench", "skp-fastdds-profile"}

RUN_ENTRY = f"""
import importlib, json, sys
out, module, function, name, *rest = sys.argv[1:]
sys.argv = [name, *rest]
try:
    code = getattr(importlib.import_module(module), function)()
except SystemExit as exit:
    code = exit.code
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
open(out, "w").write(json.dumps({{"code": code, "heavy": heavy}}))
"""


def _run(tmp_path: Path, script: tuple[str, str, str], *args: str) -> tuple[dict, str]:
    name, module, function = script
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-c", RUN_ENTRY, str(out), module, function, name, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text()), done.stdout + done.stderr


def test_every_console_script_is_covered() -> None:
    assert {name for name, _, _ in SCRIPTS} == ARGPARSE | {"keypoint_node", "image_source"}


@pytest.mark.parametrize("script", SCRIPTS, ids=[name for name, _, _ in SCRIPTS])
def test_help_is_instant(tmp_path: Path, script: tuple[str, str, str]) -> None:
    result, output = _run(tmp_path, script, "--help")
    assert result["code"] in (0, None), output
    assert "usage:" in output and script[0] in output
    assert result["heavy"] == [], f"--help imported {result['heavy']}"


@pytest.mark.parametrize(
    "script",
    [s for s in SCRIPTS if s[0] in ARGPARSE],
    ids=sorted(ARGPARSE & {s[0] for s in SCRIPTS}),
)
def test_argument_errors_are_instant(tmp_path: Path, script: tuple[str, str, str]) -> None:
    result, output = _run(tmp_path, script, "--no-such-option")
    assert result["code"] == 2, output
    assert f"{script[0]}: error:" in output
    assert result["heavy"] == [], f"an argument error imported {result['heavy']}"
