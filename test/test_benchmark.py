"""The benchmark command runs on the tiny model and prints every figure it promises."""

from __future__ import annotations

import re

from skp_core.benchmark import main


def _printed(text: str) -> tuple[float, float]:
    """A printed number and half a unit of its last digit (its rounding error)."""
    decimals = len(text.split(".")[1])
    return float(text), 0.5 * 10.0**-decimals


def test_benchmark_prints_figures_for_tiny(capsys):
    code = main(
        ["--model", "tiny", "--image-size", "64", "--feature-resolution", "16",
         "--num-tokens", "16", "--images-per-step", "2", "--views", "1", "3", "--repeat", "1"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    for label in ("inference, 1 view(s)", "inference, 3 view(s)", "optimization step"):
        line = next(line for line in out.splitlines() if line.startswith(label))
        ours, bare, ratio = (_printed(x) for x in re.findall(r"\d+\.\d+", line)[:3])
        assert ours[0] > 0 and bare[0] > 0
        # The ratio is of the unrounded times: it must lie within what the rounding allows.
        low = (ours[0] - ours[1]) / (bare[0] + bare[1]) - ratio[1]
        high = (ours[0] + ours[1]) / max(bare[0] - bare[1], 1e-9) + ratio[1]
        assert low <= ratio[0] <= high
    assert "peak" in out


def test_benchmark_reports_missing_weights_cleanly(capsys, tmp_path):
    assert main(["--model", str(tmp_path / "nowhere"), "--repeat", "1"]) == 2
    assert "tiny" in capsys.readouterr().err
