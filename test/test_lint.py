"""ament's flake8 and pep257 linters over the package, as ROS 2 packages run them.

ruff (scripts/test) is the primary linter; these keep the package clean for ament's tools too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATHS = [str(ROOT / p) for p in ("skp_core", "skp_ros", "offline_tools", "launch", "setup.py")]

# Docstring presence is not required (small private helpers), D213 contradicts the D212 style
# used throughout, our docstrings say why rather than restating the name in imperative mood, and
# D403 would "capitalize" identifiers such as UNet or safetensors that start a docstring.
PEP257_IGNORES = [
    *(f"D10{i}" for i in range(8)),
    "D213",
    "D401",
    "D403",
]


@pytest.mark.linter
def test_flake8():
    from ament_flake8.main import main_with_errors

    rc, errors = main_with_errors(argv=["--config", str(ROOT / "setup.cfg"), *PATHS])
    assert rc == 0, "flake8 found:\n" + "\n".join(errors)


@pytest.mark.linter
def test_pep257():
    from ament_pep257.main import main

    assert main(argv=["--add-ignore", *PEP257_IGNORES, "--", *PATHS]) == 0
