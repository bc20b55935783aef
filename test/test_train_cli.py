"""skp-train end to end on the tiny model and the on-disk fixtures of every dataset type.

Real files, real backbone (the built-in tiny one), no mocks. Settings are the smallest that
still exercise every stage: 64 px images, 16x16 maps, 24 tokens, 3 steps, 4 keypoints.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from offline_tools.datasets import load_dataset
from offline_tools.fixtures import write_fixture
from offline_tools.train import build_parser, main, resolve_settings
from skp_core.bundle import load_bundle
from skp_core.checkpoint import load_checkpoint
from skp_core.metrics import DATASET_PROTOCOLS

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "--model", "tiny",
    "--image-size", "64",
    "--feature-resolution", "16",
    "--num-tokens", "24",
    "--steps", "3",
    "--top-k", "4",
    "--num-candidates", "8",
    "--num-views", "2",
    "--selection-images", "4",
    "--num-workers", "0",
    "--no-progress",
]  # fmt: skip

ANNOTATED = (
    "celeba_aligned",
    "celeba_wild",
    "cub_aligned",
    "cub_001",
    "taichi",
    "deepfashion",
    "human3.6m",
    "unaligned_human3.6m",
)
REPORT_FIGURES = ("keypoints.png", "attention_maps.png", "loss.png", "metric.png", "errors.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Fixture datasets, each written once for the module on first use."""
    base = tmp_path_factory.mktemp("data")

    def root(name: str) -> Path:
        folder = base / name
        if not folder.exists():
            write_fixture(name, folder)
        return folder

    return root


def train(dataset: str, root: Path, out: Path, *extra: str) -> int:
    return main(["--dataset", dataset, "--data-root", str(root), "--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def celeba_run(data, tmp_path_factory):
    """One complete celeba_aligned run shared by the tests that inspect or rerun a run."""
    out = tmp_path_factory.mktemp("runs") / "celeba"
    assert train("celeba_aligned", data("celeba_aligned"), out) == 0
    return out


def assert_valid_pngs(folder: Path, names) -> None:
    for name in names:
        path = folder / name
        assert path.is_file(), f"missing {path}"
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG"
        with Image.open(path) as image:
            assert min(image.size) > 50


def check_annotated_run(dataset: str, root: Path, out: Path) -> None:
    protocol = DATASET_PROTOCOLS[dataset]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == dataset
    assert metrics["metric"] == protocol.metric
    assert metrics["published"] == protocol.published
    assert metrics["regressor"]["kind"] == protocol.regressor
    assert math.isfinite(metrics["mean"])
    test_set = load_dataset(dataset, root, "test", image_size=64)
    assert metrics["num_images"] == len(test_set)

    with open(out / "per_image_errors.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["index", "path", protocol.metric]
    assert len(rows) == 1 + len(test_set)
    assert all(math.isfinite(float(r[2])) for r in rows[1:] if r[2])

    for split in ("regression", "test"):
        tensors = load_file(out / f"keypoints_{split}.safetensors")
        n = len(load_dataset(dataset, root, split, image_size=64))
        assert tensors["keypoints"].shape == (n, 4, 2)
        assert ((tensors["keypoints"] > 0) & (tensors["keypoints"] < 1)).all()
        assert tensors["annotations"].shape[0] == tensors["visibility"].shape[0] == n

    bundle = load_bundle(out / "bundle")
    assert bundle.regressor is not None
    assert bundle.num_keypoints == 4 and bundle.num_tokens == 24
    assert bundle.landmark_names == list(test_set.landmark_names)
    assert bundle.num_landmarks == len(test_set.landmark_names)
    assert bundle.metrics["metric"] == protocol.metric
    assert bundle.metrics["mean"] == pytest.approx(metrics["mean"])
    assert bundle.dataset["name"] == dataset
    assert bundle.training["steps_done"] == 3
    assert bundle.backbone["model"] == "tiny"

    assert (out / "report" / "index.html").is_file()
    assert_valid_pngs(out / "report", REPORT_FIGURES)
    html = (out / "report" / "index.html").read_text()
    assert protocol.metric in html and all(name in html for name in REPORT_FIGURES)


@pytest.mark.parametrize("dataset", ANNOTATED)
def test_every_dataset_end_to_end(dataset, data, celeba_run, tmp_path, capsys):
    if dataset == "celeba_aligned":
        out = celeba_run
    else:
        out = tmp_path / "run"
        assert train(dataset, data(dataset), out) == 0
        summary = capsys.readouterr().out
        assert DATASET_PROTOCOLS[dataset].metric in summary
        assert "paper" in summary and str(out / "bundle") in summary
    check_annotated_run(dataset, data(dataset), out)


def test_custom_folder(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train("custom", data("custom"), out) == 0
    captured = capsys.readouterr()
    assert "unreadable images skipped: 2" in captured.out
    assert "broken.jpg" in captured.err  # the one-line warning names the files
    assert "bomb.jpg: its header says 16000x16000" in captured.err  # refused, not decoded
    assert not (out / "metrics.json").exists()
    assert not list(out.glob("keypoints_*.safetensors"))
    bundle = load_bundle(out / "bundle")
    assert bundle.regressor is None and bundle.metrics is None
    assert bundle.num_keypoints == 4
    assert_valid_pngs(out / "report", ("keypoints.png", "attention_maps.png", "loss.png"))
    assert (out / "report" / "report.md").is_file()
    # Stages that need annotations are refused, clearly.
    assert train("custom", data("custom"), out, "--stages", "regress") == 2
    assert "do not apply" in capsys.readouterr().err


def test_rerun_skips_finished_stages(celeba_run, data, capsys):
    state = json.loads((celeba_run / "stages.json").read_text())
    assert train("celeba_aligned", data("celeba_aligned"), celeba_run) == 0
    out = capsys.readouterr().out
    assert out.count("up to date") == 6
    assert json.loads((celeba_run / "stages.json").read_text()) == state


def test_interrupted_run_resumes(data, tmp_path, capsys):
    """--steps 2 (as a real subprocess), then --steps 4: the same context as 4 straight steps."""
    root = data("celeba_aligned")
    out = tmp_path / "resumed"
    args = ["--dataset", "celeba_aligned", "--data-root", str(root), "--out", str(out), *TINY]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = ["--steps", "2", "--num-workers", "2", "--progress"]
    done = subprocess.run(
        [sys.executable, "-m", "offline_tools.train", *args, *first],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "inter_eye_distance" in done.stdout and "bundle:" in done.stdout
    # stderr is a pipe, not a terminal: plain progress lines, no carriage-return redraws
    assert "\r" not in done.stderr and "optimize tokens: 2/2 step (100 %)" in done.stderr
    _, meta = load_checkpoint(out / "checkpoints")
    assert meta["step"] == 2
    first_select = json.loads((out / "stages.json").read_text())["select"]["key"]

    capsys.readouterr()
    assert main([*args, "--steps", "4"]) == 0
    captured = capsys.readouterr()
    message = f"optimize: resuming at step 2 of 4 from {out / 'checkpoints'}"
    assert message in captured.out + captured.err
    _, meta = load_checkpoint(out / "checkpoints")
    assert meta["step"] == 4 and len(meta["history"]) == 4
    assert json.loads((out / "stages.json").read_text())["optimize"]["resumed_at_step"] == 2
    assert "resumed at step 2" in (out / "report" / "index.html").read_text()
    # The new context invalidated what was derived from the old one.
    state = json.loads((out / "stages.json").read_text())
    assert state["select"]["key"] != first_select
    assert load_bundle(out / "bundle").training["steps_done"] == 4

    straight = tmp_path / "straight"
    straight_args = ["--out", str(straight), "--steps", "4", "--stages", "optimize"]
    assert main([*args, *straight_args]) == 0
    resumed, _ = load_checkpoint(out / "checkpoints")
    uninterrupted, straight_meta = load_checkpoint(straight / "checkpoints")
    assert torch.equal(resumed["context"], uninterrupted["context"])
    assert [h["loss"] for h in meta["history"]] == [h["loss"] for h in straight_meta["history"]]


def test_same_inputs_and_seed_give_byte_identical_files(celeba_run, data, tmp_path):
    """A second process repeating the fixture's run writes the same bytes, bundle included."""
    out = tmp_path / "again"
    args = ["--dataset", "celeba_aligned", "--data-root", str(data("celeba_aligned"))]
    done = subprocess.run(
        [sys.executable, "-m", "offline_tools.train", *args, "--out", str(out), *TINY],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = sorted(
        str(p.relative_to(celeba_run))
        for p in celeba_run.rglob("*")
        if p.suffix in (".safetensors", ".json", ".csv") and p.name != "stages.json"
    )
    assert "bundle/bundle.json" in results and "bundle/tensors.safetensors" in results
    assert any(name.startswith("checkpoints/") for name in results)
    for name in results:
        assert (out / name).read_bytes() == (celeba_run / name).read_bytes(), name


def test_stages_run_alone(celeba_run, data, capsys):
    root = data("celeba_aligned")
    keypoint_files = [celeba_run / f"keypoints_{s}.safetensors" for s in ("regression", "test")]
    stamps = [p.stat().st_mtime_ns for p in keypoint_files]
    before = json.loads((celeba_run / "metrics.json").read_text())
    (celeba_run / "regressor.safetensors").unlink()
    (celeba_run / "metrics.json").unlink()
    capsys.readouterr()
    assert train("celeba_aligned", root, celeba_run, "--stages", "regress,evaluate") == 0
    out = capsys.readouterr().out
    assert "regress" in out and "evaluate" in out and "optimize" not in out
    after = json.loads((celeba_run / "metrics.json").read_text())
    assert after["mean"] == pytest.approx(before["mean"])
    assert [p.stat().st_mtime_ns for p in keypoint_files] == stamps  # precompute not rerun

    # Up to date stages are skipped unless forced.
    finished = json.loads((celeba_run / "stages.json").read_text())["regress"]["finished"]
    assert train("celeba_aligned", root, celeba_run, "--stages", "regress") == 0
    assert "up to date" in capsys.readouterr().out
    assert (
        train("celeba_aligned", root, celeba_run, "--stages", "regress", "--force", "regress") == 0
    )
    assert "up to date" not in capsys.readouterr().out
    state = json.loads((celeba_run / "stages.json").read_text())
    assert state["regress"]["finished"] >= finished


def test_stage_without_its_inputs_is_a_clear_error(data, tmp_path, capsys):
    out = tmp_path / "empty"
    assert train("celeba_aligned", data("celeba_aligned"), out, "--stages", "evaluate") == 2
    err = capsys.readouterr().err
    assert "keypoints_test.safetensors is missing" in err and "precompute" in err


def test_evaluate_an_existing_bundle(celeba_run, data, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["--dataset", "celeba_aligned", "--data-root", str(data("celeba_aligned"))]
    args += ["--out", str(out), "--bundle", str(celeba_run / "bundle"), "--num-workers", "0"]
    args += ["--max-regression-images", "4"]
    assert main([*args, "--no-progress", "--stages", "precompute,evaluate"]) == 0
    assert "optimize" not in capsys.readouterr().out
    assert not (out / "checkpoints").exists()
    assert load_file(out / "keypoints_regression.safetensors")["keypoints"].shape[0] == 4
    original = json.loads((celeba_run / "metrics.json").read_text())
    again = json.loads((out / "metrics.json").read_text())
    assert again["mean"] == pytest.approx(original["mean"])  # same tokens, views, regressor


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("layers", ["up_blocks.9.attentions.0"], "method.layers: no attention layer"),
        ("num_views", 1_000_000_000, "method.num_views must be between 1 and 256"),
    ],
)
def test_bundle_that_cannot_run_fails_before_any_stage(
    celeba_run, data, tmp_path, capsys, field, value, message
):
    bundle = tmp_path / "bundle"
    shutil.copytree(celeba_run / "bundle", bundle)
    doc = json.loads((bundle / "bundle.json").read_text())
    doc["method"][field] = value
    (bundle / "bundle.json").write_text(json.dumps(doc))
    out = tmp_path / "eval"
    args = ["--dataset", "celeba_aligned", "--data-root", str(data("celeba_aligned"))]
    args += ["--out", str(out), "--bundle", str(bundle), "--num-workers", "0", "--no-progress"]
    capsys.readouterr()
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in captured.err
    assert not (out / "stages.json").exists()


def test_colab_preset_gives_the_notebooks_values_and_yields_to_flags(tmp_path):
    base = ["--dataset", "custom", "--data-root", str(tmp_path), "--out", str(tmp_path / "r")]
    base += ["--model", "sd-legacy/stable-diffusion-v1-5"]
    cfg = resolve_settings(build_parser().parse_args([*base, "--preset", "colab"])).config
    assert (cfg.num_tokens, cfg.num_candidates, cfg.top_k, cfg.images_per_step) == (100, 10, 10, 1)
    assert (cfg.sigma, cfg.selection_sigma, cfg.equivariance_weight) == (1.0, 3.0, 100.0)
    assert (cfg.rotation_deg, cfg.scale_min, cfg.scale_max, cfg.translation) == (
        30.0,
        0.9,
        1.1,
        0.1,
    )
    assert cfg.lr == 5e-3 and cfg.top_k_strategy == "gaussian"  # the rest: reference defaults
    flags = ["--preset", "colab", "--num-tokens", "50", "--selection-sigma", "2.5"]
    cfg = resolve_settings(build_parser().parse_args([*base, *flags])).config
    assert cfg.num_tokens == 50 and cfg.selection_sigma == 2.5 and cfg.top_k == 10
    config = tmp_path / "preset.yaml"
    config.write_text(yaml.safe_dump({"preset": "colab", "top_k": 4}))
    cfg = resolve_settings(build_parser().parse_args([*base, "--config", str(config)])).config
    assert cfg.num_tokens == 100 and cfg.top_k == 4


def test_yaml_precedence(tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": "celeba_aligned",
                "data-root": "/data/celeba",
                "batch_size": 7,
                "lr": "5e-2",
                "method": {"num_views": 3, "top_k": 5},
            }
        )
    )

    def resolve(*argv):
        return resolve_settings(build_parser().parse_args(["--config", str(config), *argv]))

    settings = resolve("--model", "tiny", "--out", "run", "--num-views", "2")
    cfg = settings.config
    assert cfg.num_views == 2  # CLI over YAML
    assert cfg.lr == 0.05 and cfg.top_k == 5  # YAML over the tiny defaults
    assert cfg.num_tokens == 64 and cfg.sigma == 1.0  # tiny defaults
    assert settings.options.batch_size == 7 and settings.options.num_workers == 2
    assert settings.options.data_root == Path("/data/celeba")
    reference = resolve("--model", "sd-legacy/stable-diffusion-v1-5", "--out", "run")
    assert reference.config.num_tokens == 500 and reference.config.sigma == 2.0
    assert reference.config.lr == 0.05 and reference.config.num_views == 3


def test_written_config_reproduces_the_run(celeba_run):
    written = yaml.safe_load((celeba_run / "config.yaml").read_text())
    assert written["method"]["num_tokens"] == 24 and written["model"] == "tiny"
    args = build_parser().parse_args(["--config", str(celeba_run / "config.yaml")])
    settings = resolve_settings(args)
    assert settings.config.to_dict() == load_bundle(celeba_run / "bundle").method
    assert settings.options.out == celeba_run


def test_bad_settings_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: celeba_aligned\nlearning_rate: 3\n")
    assert main(["--config", str(bad), "--data-root", "x", "--model", "tiny", "--out", "o"]) == 2
    assert "unknown setting(s)" in capsys.readouterr().err
    assert main(["--dataset", "celeba_aligned", "--data-root", "x", "--out", "o"]) == 2
    assert "--model is required" in capsys.readouterr().err
    args = ["--dataset", "celeba_aligned", "--data-root", "x", "--out", "o", "--model", "tiny"]
    assert main([*args, "--top-k", "30"]) == 2
    assert "top_k (30) must not exceed num_candidates (16)" in capsys.readouterr().err
    # Every check names what it was given.
    assert main([*args, "--checkpoint-every", "0"]) == 2
    assert "--checkpoint-every must be at least 1, got 0" in capsys.readouterr().err
    assert main([*args, "--num-workers", "-2"]) == 2
    assert "--max-regression-images >= 1, got -2 and" in capsys.readouterr().err


def test_missing_data_root_exit_2(tmp_path, capsys):
    missing = tmp_path / "no" / "celeba"
    assert train("celeba_aligned", missing, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert err.startswith("skp-train: error:") and err.count("\n") == 1
    assert "Traceback" not in err


def test_missing_model_weights_exit_2(data, tmp_path, capsys):
    root = data("celeba_aligned")
    out = tmp_path / "run"
    args = ["--dataset", "celeba_aligned", "--data-root", str(root), "--out", str(out)]
    assert main([*args, *TINY, "--model", str(tmp_path / "no-such-model")]) == 2
    captured = capsys.readouterr()
    assert "no-such-model" in captured.err and "Traceback" not in captured.err
    # It fails before any stage starts: none announced, none recorded.
    assert "optimize:" not in captured.out + captured.err
    state = out / "stages.json"
    assert not state.exists() or "optimize" not in json.loads(state.read_text())


def test_non_finite_loss_exit_1_keeps_checkpoint(data, tmp_path, capsys):
    root = data("celeba_aligned")
    out = tmp_path / "nan"
    extra = ["--stages", "optimize", "--checkpoint-every", "1", "--lr", "1e30"]
    assert train("celeba_aligned", root, out, *extra) == 1
    err = capsys.readouterr().err
    assert "non-finite loss at step 2" in err and str(out / "checkpoints") in err
    _, meta = load_checkpoint(out / "checkpoints")
    assert meta["step"] == 1
    # The stage that failed claimed its outputs but is not recorded as done.
    optimize = json.loads((out / "stages.json").read_text())["optimize"]
    assert "started" in optimize and "finished" not in optimize and "seconds" not in optimize


def test_changed_optimization_settings_need_force(celeba_run, data, capsys):
    root = data("celeba_aligned")
    assert train("celeba_aligned", root, celeba_run, "--stages", "optimize", "--lr", "0.1") == 1
    err = capsys.readouterr().err
    assert "other settings" in err and "--force optimize" in err
    # Settings the optimization never reads do not block resuming it.
    assert (
        train("celeba_aligned", root, celeba_run, "--stages", "optimize", "--num-views", "3") == 0
    )
    assert "up to date" in capsys.readouterr().out


def test_precompute_resumes_after_a_crash(celeba_run, data, tmp_path, capsys):
    """A broken test image stops precompute; finished chunks survive and are not redone."""
    root = data("celeba_aligned")
    broken = Path(load_dataset("celeba_aligned", root, "test", image_size=64)[2]["path"])
    original = broken.read_bytes()
    out = tmp_path / "chunks"
    args = ["--bundle", str(celeba_run / "bundle"), "--stages", "precompute"]
    args += ["--precompute-chunk", "1"]
    try:
        broken.write_bytes(original[:40])
        assert train("celeba_aligned", root, out, *args) == 2
        assert str(broken) in capsys.readouterr().err
        parts = list((out / "precompute_parts").glob("test-*/chunk-*.safetensors"))
        assert len(parts) == 2 and not (out / "keypoints_test.safetensors").exists()
    finally:
        broken.write_bytes(original)
    assert train("celeba_aligned", root, out, *args) == 0
    captured = capsys.readouterr()
    assert "precompute test: resuming, 2 of 3 chunks done" in captured.err, captured
    assert not (out / "precompute_parts").exists()
    for split in ("regression", "test"):
        ours = load_file(out / f"keypoints_{split}.safetensors")
        reference = load_file(celeba_run / f"keypoints_{split}.safetensors")
        assert all(torch.equal(ours[k], reference[k]) for k in reference)


def test_max_len_caps_the_optimization_set_and_validation_is_human36m_only(data, tmp_path, capsys):
    root = data("celeba_aligned")
    out = tmp_path / "capped"
    assert train("celeba_aligned", root, out, "--stages", "optimize", "--max-len", "2") == 0
    assert "optimize: 2 training images" in capsys.readouterr().err
    again = tmp_path / "capped_yaml"
    assert (
        train(
            "celeba_aligned",
            root,
            again,
            "--stages",
            "optimize",
            "--config",
            str(out / "config.yaml"),
        )
        == 0
    )
    assert "optimize: 2 training images" in capsys.readouterr().err  # config.yaml keeps it
    assert train("celeba_aligned", root, tmp_path / "bad", "--max-len", "0") == 2
    assert "--max-len must be -1 (all images) or at least 1, got 0" in capsys.readouterr().err
    assert train("celeba_aligned", root, tmp_path / "v", "--validation") == 2
    assert "--validation is the reference's Human3.6M split" in capsys.readouterr().err


def test_log_to_tensorboard_and_wandb(data, tmp_path, capsys, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = data("celeba_aligned")
    out = tmp_path / "logged"
    stages = ["--stages", "optimize,select", "--log-to", "tensorboard"]
    assert train("celeba_aligned", root, out, *stages) == 0
    events = EventAccumulator(str(out / "logs" / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("optimize/loss")] == [1, 2, 3]
    assert {"optimize/equivariance", "optimize/localization"} <= set(tags)
    counts = [t for t in tags if t.startswith("select/count/keypoint")]
    assert len(counts) == 4  # one per selected token
    checkpoint = load_checkpoint(out / "checkpoints")[1]
    logged = [e.value for e in events.Scalars("optimize/loss")]
    assert logged == pytest.approx([h["loss"] for h in checkpoint["history"]])

    capsys.readouterr()
    monkeypatch.setenv("WANDB_MODE", "offline")
    other = tmp_path / "wandb"
    code = train("celeba_aligned", root, other, "--stages", "optimize", "--log-to", "wandb")
    if importlib.util.find_spec("wandb") is None:
        assert code == 2
        assert "--log-to wandb needs the wandb package" in capsys.readouterr().err
        assert not (other / "checkpoints").exists()  # refused before any stage
    else:
        assert code == 0 and any((other / "logs").rglob("*.wandb"))
