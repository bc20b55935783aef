"""The benchmark command runs on the tiny model and prints every figure it promises."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
from pathlib import Path

import pytest

from skp_core.benchmark import targets_for
from skp_core.benchmark_cli import main

REPO = Path(__file__).resolve().parent.parent


def _printed(text: str) -> tuple[float, float]:
    """A printed number and half a unit of its last digit (its rounding error)."""
    decimals = len(text.split(".")[1])
    return float(text), 0.5 * 10.0**-decimals


def test_benchmark_prints_figures_for_tiny(capsys, tmp_path):
    code = main(
        ["--model", "tiny", "--image-size", "64", "--feature-resolution", "16",
         "--num-tokens", "16", "--images-per-step", "2", "--views", "1", "3", "--repeat", "3",
         "--latent-views", "--json", str(tmp_path / "bench.json")]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    for label in ("inference, 1 view(s)", "inference, 3 view(s)", "optimization step"):
        line = next(line for line in out.splitlines() if line.startswith(label))
        ours, bare, ratio = (_printed(x) for x in re.findall(r"\d+\.\d+", line)[:3])
        assert ours[0] > 0 and bare[0] > 0 and ratio[0] > 0
    assert "peak RSS above rest" in out and "interleaved pairs" in out
    assert "latent vs image views on 4 photos" in out
    data = json.loads((tmp_path / "bench.json").read_text())
    keys = [row["key"] for row in data["rows"]]
    assert keys == ["inference_1v", "inference_1v_latent", "inference_3v", "inference_3v_latent",
                    "optimize_step"]  # fmt: skip
    for row in data["rows"]:
        pairs = list(zip(row["ours_times"], row["bare_times"], strict=True))
        assert len(pairs) == 3
        assert row["ratio"] == statistics.median(o / b for o, b in pairs)
        assert row["ours_s"] == statistics.median(row["ours_times"])
        assert row["ours_peak_mib"] >= 0 and row["bare_peak_mib"] >= 0
    assert data["settings"]["num_tokens"] == 16
    assert 0 <= data["latent_view_agreement"]["within_2pct"] <= 1


def test_targets_are_the_speed_issue_goals():
    assert targets_for("sd15-random") == {
        "inference_10v": 1.3, "optimize_step": 1.5, "optimize_step_memory": 2.0,
    }  # fmt: skip
    assert targets_for("sd15-narrow") == {"inference_10v": 2.9, "optimize_step": 7.0}
    assert targets_for("/models/sd15") == targets_for("sd15-random")
    assert targets_for("tiny") == {}


def test_gpu_check_says_clearly_when_there_is_no_gpu(tmp_path):
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu-check"), "--out", str(tmp_path / "gc")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "no CUDA device: this check needs a GPU" in done.stdout
    summary = json.loads((tmp_path / "gc" / "gpu-check.json").read_text())
    assert summary["cuda_available"] is False and summary["parts"] == {}


def test_benchmark_reports_missing_weights_cleanly(capsys, tmp_path):
    assert main(["--model", str(tmp_path / "nowhere"), "--repeat", "1"]) == 2
    assert "tiny" in capsys.readouterr().err


def _readme_speed_commands() -> list[list[str]]:
    import shlex

    text = (REPO / "README.md").read_text()
    section = text[text.index("## Speed") :]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block, "the README's speed section has no commands"
    return [shlex.split(line.split("#")[0]) for line in block.group(1).splitlines() if line]


@pytest.mark.slow
def test_readme_speed_commands_run_as_written(tmp_path):
    """The narrow model's command exactly as printed; the SD 1.5-width one at small shapes
    (appended flags override; its full run takes a quarter of an hour on a CI machine)."""
    commands = _readme_speed_commands()
    assert [c[:3] for c in commands] == [["skp-bench", "--model", "sd15-random"],
                                         ["skp-bench", "--model", "sd15-narrow"]]  # fmt: skip
    small = ["--image-size", "64", "--num-tokens", "32", "--feature-resolution", "32",
             "--views", "1", "--repeat", "1"]  # fmt: skip
    for command, extra in ((commands[1], []), (commands[0], small)):
        out = tmp_path / f"{command[2]}.json"
        # The timeout is a hang guard only: three loaded suites at once took it past 900 s.
        done = subprocess.run(
            [*command, *extra, "--json", str(out)],
            capture_output=True, text=True, timeout=3600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert "optimization step (4 img), s" in done.stdout
        rows = {row["key"]: row for row in json.loads(out.read_text())["rows"]}
        assert rows["optimize_step"]["target"] == targets_for(command[2])["optimize_step"]
        assert all(row["ours_s"] > 0 and row["bare_s"] > 0 for row in rows.values())
