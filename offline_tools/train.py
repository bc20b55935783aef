"""skp-train: learn keypoint tokens on a dataset, evaluate them, and export a bundle.

    skp-train --dataset celeba_aligned --data-root /data/celeba --model MODEL --out runs/celeba

runs optimize -> select -> precompute -> regress -> evaluate -> report (custom folders:
optimize -> select -> report) and writes RUN_DIR/bundle (for the ROS node) and RUN_DIR/report.
Every stage is resumable and skipped when up to date (see offline_tools.stages); `--stages`
runs a subset on an existing run directory, `--force` reruns stages that are up to date.
Multi-process: `torchrun --nproc-per-node N -m offline_tools.train ...` (or the skp-train
script) shards the optimization and the precompute pass over the processes.

Settings: every method hyperparameter (METHOD.md §3-§6) is a flag whose default is the
reference code's (MethodConfig), or the built-in tiny model's defaults with `--model tiny`.
The same keys can come from `--config FILE.yaml`; precedence is CLI > YAML > model defaults.
Exit codes: 0 success, 1 the optimization failed (non-finite loss, unusable checkpoint),
2 bad input (missing data, model or files, invalid settings).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from offline_tools.datasets import list_datasets
from offline_tools.run_layout import STAGES, RunOptions, RunPaths, StageError, applicable_stages
from skp_core.atomic_files import atomic_write_text
from skp_core.config import PRESETS, MethodConfig, default_config

if TYPE_CHECKING:  # torch, diffusers and the stage code load only once a run starts
    from offline_tools.distributed import Distributed
    from offline_tools.stages import RunResult, TrainingRun
    from skp_core.bundle import Bundle

__all__ = ["ConfigError", "build_parser", "main", "resolve_settings"]

PROG = "skp-train"

# What each method flag means (the defaults are read from MethodConfig, never repeated here).
METHOD_HELP: dict[str, str] = {
    "num_tokens": "learned context tokens (§1)",
    "lr": "Adam learning rate (§3)",
    "steps": "optimizer steps (§3)",
    "images_per_step": "images per optimizer step (§3)",
    "sigma": "Gaussian sigma in pixels of the feature map (§3)",
    "num_candidates": "Gaussian candidate tokens per image (§3)",
    "top_k": "keypoints: tokens kept by furthest point sampling and selection (§3, §4)",
    "top_k_strategy": "candidate ranking before furthest point sampling: gaussian (KL to a "
    "Gaussian at the argmax), entropy (lowest spatial-softmax entropy) or consistent (the "
    "first num_candidates tokens) (§3, §4)",
    "num_subjects": "instances of the object per image: one Gaussian per subject in the "
    "candidate ranking and the sharpening loss, and that many locations per keypoint at "
    "inference, grouped into instances (§3, §5)",
    "equivariance_weight": "weight of the equivariance loss (§3)",
    "localization_weight": "weight of the localization (sharpening) loss (§3)",
    "rotation_deg": "random affine views: max rotation in degrees (§3, §5)",
    "scale_min": "random affine views: min scale (§3, §5)",
    "scale_max": "random affine views: max scale (§3, §5)",
    "translation": "random affine views: max translation, normalized (§3, §5)",
    "image_size": "backbone input size in pixels (§1)",
    "feature_resolution": "attention maps are upsampled to this resolution (§2)",
    "layers": "captured cross-attention layers, comma separated (§2)",
    "selection_images": "training images counted by the token selection (§4)",
    "selection_sigma": "Gaussian sigma of the selection's candidate ranking (default: sigma)",
    "num_views": "test-time augmentation views per image (§5)",
    "include_identity_view": "make view 0 the un-warped image (upstream: no) (§5)",
    "view_space": "image (exact, §5) or latent: encode once and warp the latent per view "
    "(faster, approximate)",
    "max_loc_strategy": "read-out of the view-averaged maps: argmax (the protocol's), "
    "weighted_avg (the reference's centroid near the argmax) or subpixel (§5)",
    "max_loc_distance": "weighted_avg: radius kept around the argmax, in pixels of a "
    "512-pixel map (scaled with the map size); -1: the whole map",
    "seed": "seed of every random draw (context init, batches, views, noise)",
}

# Run settings that are not method hyperparameters, with their defaults.
RUN_DEFAULTS: dict[str, Any] = {
    "device": "auto",
    "dtype": "float32",
    "batch_size": 20,
    "num_workers": 2,
    "max_regression_images": 50_000,
    "allow_pickle": False,
    "checkpoint_every": 50,
    "augment": True,
    "report_images": 6,
    "precompute_chunk": 500,
    "progress": True,
    "validation": False,
    "max_len": -1,
    "log_to": "",
}
RUN_TYPES: dict[str, type] = {
    "device": str,
    "dtype": str,
    "batch_size": int,
    "num_workers": int,
    "max_regression_images": int,
    "allow_pickle": bool,
    "checkpoint_every": int,
    "augment": bool,
    "report_images": int,
    "precompute_chunk": int,
    "progress": bool,
    "validation": bool,
    "max_len": int,
    "log_to": str,
}
# Where the data and results are; settable on the CLI or in the YAML file.
LOCATION_KEYS: tuple[str, ...] = ("dataset", "data_root", "model", "out", "bundle")
METHOD_DEFAULTS = MethodConfig()


class ConfigError(Exception):
    """Invalid or missing settings (exit code 2)."""


# ------------------------------------------------------------------------------------------
# Parsing and converting values
# ------------------------------------------------------------------------------------------


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"not an integer: {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"not an integer: {value!r}")
        return int(value)
    return int(str(value).strip())


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    else:
        items = [str(v).strip() for v in value]
    if not items or not all(items):
        raise ValueError(f"expected a comma separated list of names, got {value!r}")
    return tuple(items)


def _converter(kind: type) -> Any:
    return {bool: _bool, int: _int, float: float, str: str, tuple: _names}[kind]


_OPTIONAL_FLOATS = frozenset({"selection_sigma"})  # None by default: "same as another field"


def method_type(name: str) -> type:
    """Python type of a MethodConfig field, from its default value."""
    return float if name in _OPTIONAL_FLOATS else type(getattr(METHOD_DEFAULTS, name))


def convert(name: str, value: Any) -> Any:
    """A setting from the CLI or YAML as the type the run needs; ConfigError if it is not."""
    if name in LOCATION_KEYS:
        return (
            None if value is None else (str(value) if name in ("dataset", "model") else Path(value))
        )
    if name == "preset":
        return str(value)
    kind = RUN_TYPES.get(name) or method_type(name)
    try:
        return _converter(kind)(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid value for {name}: {value!r} ({error})") from None


def stage_list(text: str) -> list[str]:
    """--stages / --force: comma separated stage names ("all" = every stage)."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if names == ["all"]:
        return list(STAGES)
    unknown = [s for s in names if s not in STAGES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown stage(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(STAGES)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    """Every flag defaults to None so that YAML and model defaults can fill what is unset."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Optimize StableKeypoints tokens on a dataset, select the best ones, evaluate them "
            "with the paper's protocol and export a bundle for the ROS node."
        ),
        epilog="Precedence: command line > --config YAML > model defaults (tiny has its own).",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--dataset", choices=list_datasets(), help="dataset layout under --data-root")
    run.add_argument("--data-root", type=Path, help="dataset folder (custom: any image folder)")
    run.add_argument(
        "--model", help="tiny, sd15-random, a diffusers folder, hub id or .safetensors"
    )
    run.add_argument("--out", type=Path, help="run directory (created; reruns resume in it)")
    run.add_argument("--config", type=Path, help="YAML file with any of these settings")
    run.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="start from a named set of method settings (colab: the authors' notebook); "
        "flags and YAML still override it",
    )
    run.add_argument(
        "--stages",
        type=stage_list,
        help=f"comma separated subset of {','.join(STAGES)} (default: all that apply)",
    )
    run.add_argument(
        "--force",
        type=stage_list,
        default=[],
        help="rerun these stages even if up to date (optimize: start over); 'all' for every one",
    )
    run.add_argument(
        "--bundle",
        type=Path,
        help="use this bundle's tokens (and regressor) instead of optimize + select",
    )
    run.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    run.add_argument(
        "--dtype", help="backbone dtype: float32, float16, bfloat16 (default: float32)"
    )
    run.add_argument(
        "--batch-size",
        type=int,
        help="images x views per UNet pass (the mapper's max batch; default: 20)",
    )
    run.add_argument(
        "--num-workers", type=int, help="DataLoader workers for precompute (default: 2)"
    )
    run.add_argument(
        "--max-regression-images",
        type=int,
        help="images of the regression split used to fit the regressor (default: 50000, §6)",
    )
    run.add_argument(
        "--allow-pickle",
        action=argparse.BooleanOptionalAction,
        help="let Tai-Chi read its pandas pickles (runs code from the file; default: no)",
    )
    run.add_argument(
        "--checkpoint-every", type=int, help="optimizer steps between checkpoints (default: 50)"
    )
    run.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help="dataset augmentation of training images (default: yes)",
    )
    run.add_argument(
        "--validation",
        action=argparse.BooleanOptionalAction,
        help="human3.6m: the reference's validation split (train on S1, S5-S8, test on S9), "
        "to tune settings without touching the test subject (default: no)",
    )
    run.add_argument(
        "--max-len",
        type=int,
        help="optimize on the first N training images only, as the reference's --max_len "
        "(selection still sees the whole split; default: -1, all)",
    )
    run.add_argument(
        "--log-to",
        choices=("tensorboard", "wandb"),
        help="also log the loss terms, selection counts and metrics to TensorBoard (event "
        "files in RUN_DIR/logs) or Weights & Biases (its package must be installed; "
        "WANDB_MODE=offline works without network); default: neither",
    )
    run.add_argument(
        "--report-images", type=int, help="sample images drawn in the report (default: 6)"
    )
    run.add_argument(
        "--precompute-chunk",
        type=int,
        help="images per resumable piece of the precompute stage (default: 500)",
    )
    run.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, help="progress bars (default: yes)"
    )
    method = parser.add_argument_group(
        "method (METHOD.md §3-§6; defaults: reference code, or tiny's with --model tiny)"
    )
    tiny = default_config("tiny")
    for f in fields(MethodConfig):
        default = getattr(METHOD_DEFAULTS, f.name)
        shown = ",".join(default) if isinstance(default, tuple) else default
        tiny_value = getattr(tiny, f.name)
        extra = f"; tiny: {tiny_value}" if tiny_value != default else ""
        text = f"{METHOD_HELP.get(f.name, f.name)} (default: {shown}{extra})"
        flag = "--" + f.name.replace("_", "-")
        kind = method_type(f.name)
        if kind is bool:
            method.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        else:
            method.add_argument(flag, type=_converter(kind), help=text, metavar=f.name.upper())
    return parser


# ------------------------------------------------------------------------------------------
# Settings: CLI > YAML > model defaults
# ------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> dict[str, Any]:
    """Flat {key: value} from a YAML file; a `method:` section is merged in; dashes allowed."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: expected a YAML file at {path}") from None
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "method" and isinstance(value, dict):
            flat.update({str(k).replace("-", "_"): v for k, v in value.items()})
        else:
            flat[str(key).replace("-", "_")] = value
    known = set(LOCATION_KEYS) | set(RUN_DEFAULTS) | {f.name for f in fields(MethodConfig)}
    known.add("preset")
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) in {path}: {', '.join(unknown)}")
    return {k: convert(k, v) for k, v in flat.items() if v is not None}


@dataclass
class Settings:
    """The resolved run: options, method configuration and the bundle to start from."""

    options: RunOptions
    config: MethodConfig
    bundle: Bundle | None
    stages: list[str]
    force: list[str]


def _pick_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_settings(args: argparse.Namespace) -> Settings:
    """Merge CLI, YAML and defaults into a validated run."""
    from_yaml = load_yaml(args.config) if args.config else {}
    cli = {k: v for k, v in vars(args).items() if v is not None}
    merged = {**from_yaml, **{k: v for k, v in cli.items() if k not in ("config", "stages")}}

    bundle = None
    if merged.get("bundle"):
        from skp_core.bundle import load_bundle

        bundle = load_bundle(merged["bundle"])
        merged.setdefault("model", bundle.backbone.get("model"))
    for key in ("dataset", "data_root", "model", "out"):
        if not merged.get(key):
            raise ConfigError(
                f"--{key.replace('_', '-')} is required (on the command line or in YAML)"
            )
    model = str(merged["model"])

    method_names = {f.name for f in fields(MethodConfig)}
    if bundle is not None:
        known = {k: v for k, v in bundle.method.items() if k in method_names}
        base = MethodConfig.from_dict(known)
    else:
        base = default_config(model)
    if merged.get("preset"):
        if merged["preset"] not in PRESETS:
            raise ConfigError(
                f"unknown preset {merged['preset']!r}; choose one of {', '.join(sorted(PRESETS))}"
            )
        base = base.with_overrides(**PRESETS[merged["preset"]])
    method_yaml = {k: v for k, v in from_yaml.items() if k in method_names}
    method_cli = {k: v for k, v in cli.items() if k in method_names}
    try:
        config = base.with_overrides(**method_yaml).with_overrides(**method_cli)
        config.validate()
    except ValueError as error:
        raise ConfigError(f"invalid method settings: {error}") from None

    run = {**RUN_DEFAULTS, **{k: v for k, v in merged.items() if k in RUN_DEFAULTS}}
    for name in ("batch_size", "checkpoint_every", "report_images", "precompute_chunk"):
        if run[name] < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {run[name]}")
    if run["max_len"] != -1 and run["max_len"] < 1:
        raise ConfigError(f"--max-len must be -1 (all images) or at least 1, got {run['max_len']}")
    if run["validation"] and merged["dataset"] != "human3.6m":
        raise ConfigError(
            f"--validation is the reference's Human3.6M split; dataset {merged['dataset']!r} "
            "has none"
        )
    if run["num_workers"] < 0 or run["max_regression_images"] < 1:
        raise ConfigError(
            "--num-workers must be >= 0 and --max-regression-images >= 1, got "
            f"{run['num_workers']} and {run['max_regression_images']}"
        )
    options = RunOptions(
        dataset=str(merged["dataset"]),
        data_root=Path(merged["data_root"]).expanduser(),
        model=model,
        out=Path(merged["out"]).expanduser(),
        device=_pick_device(str(run["device"])),
        dtype=str(run["dtype"]),
        batch_size=int(run["batch_size"]),
        num_workers=int(run["num_workers"]),
        max_regression_images=int(run["max_regression_images"]),
        allow_pickle=bool(run["allow_pickle"]),
        checkpoint_every=int(run["checkpoint_every"]),
        augment=bool(run["augment"]),
        bundle=Path(merged["bundle"]) if merged.get("bundle") else None,
        report_images=int(run["report_images"]),
        precompute_chunk=int(run["precompute_chunk"]),
        progress=bool(run["progress"]),
        validation=bool(run["validation"]),
        max_len=None if int(run["max_len"]) == -1 else int(run["max_len"]),
        log_to=str(run["log_to"]) or None,
    )
    if options.log_to not in (None, "tensorboard", "wandb"):
        raise ConfigError(f"log_to must be tensorboard or wandb, got {options.log_to!r}")
    if options.dataset not in list_datasets():
        raise ConfigError(f"unknown dataset {options.dataset!r}; choose from {list_datasets()}")

    allowed = applicable_stages(options.dataset, bundle is not None)
    if args.stages is None:
        stages = list(allowed)
        if bundle is not None and bundle.regressor is not None and "regress" in stages:
            stages.remove("regress")  # evaluate the bundle as it is
    else:
        stages = list(args.stages)
    wrong = [s for s in stages + list(args.force or []) if s not in allowed]
    if wrong:
        reason = "with --bundle" if bundle is not None else f"for dataset {options.dataset}"
        raise ConfigError(
            f"stage(s) {', '.join(wrong)} do not apply {reason}; applicable: {', '.join(allowed)}"
        )
    return Settings(options, config, bundle, stages, list(args.force or []))


def effective_yaml(settings: Settings) -> str:
    """config.yaml of the run: reusable with --config."""
    opts = settings.options
    data: dict[str, Any] = {
        "dataset": opts.dataset,
        "data_root": str(opts.data_root),
        "model": opts.model,
        "out": str(opts.out),
    }
    if opts.bundle is not None:
        data["bundle"] = str(opts.bundle)
    data.update({name: getattr(opts, name) for name in RUN_DEFAULTS})
    data["method"] = settings.config.to_dict()
    header = "# Effective configuration of this skp-train run (reuse with --config).\n"
    return header + yaml.safe_dump(data, sort_keys=False)


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


def _summary(settings: Settings, result: RunResult, seconds: float) -> str:
    opts = settings.options
    lines = [f"{PROG} summary: {opts.dataset} with {opts.model} in {opts.out}"]
    metrics = result.metrics
    if metrics:
        direction = "lower" if metrics.get("lower_is_better", True) else "higher"
        value = metrics.get("mean")
        shown = "n/a" if value is None else f"{value:.4g}"
        published = metrics.get("published")
        paper = "n/a" if published is None else f"{published:.4g}"
        lines.append(
            f"  {metrics.get('metric')}: {shown} {metrics.get('units', '')} "
            f"({direction} is better; paper: {paper}) on {metrics.get('num_valid')} test images"
        )
    elif opts.dataset == "custom":
        lines.append("  custom dataset: no annotations, no metric")
    if result.skipped_images:
        lines.append(f"  unreadable images skipped: {result.skipped_images}")
    for stage in STAGES:
        record = result.records.get(stage)
        if record is None:
            continue
        state = f"{record.seconds:.1f} s" if record.status == "ran" else record.note or "skipped"
        lines.append(f"  {stage:<10} {state}")
    lines.append(f"  total      {seconds:.1f} s")
    if result.bundle:
        lines.append(f"  bundle: {result.bundle}")
    if result.report:
        lines.append(f"  report: {result.report}")
    return "\n".join(lines)


def _error(message: str, code: int) -> int:
    text = " ".join(str(message).split())  # one line, however the message was wrapped
    print(f"{PROG}: error: {text}", file=sys.stderr, flush=True)
    return code


def _preflight(run: TrainingRun, stages: Sequence[str], bundle: Bundle | None) -> None:
    """Open every split the stages read, and the model a pending optimization needs, now.

    Missing files then fail in seconds, not hours, and before any stage has started; so does
    a given bundle that cannot run on the model (a layer it lacks, another context size).
    """
    needs = set()
    if {"optimize", "select"} & set(stages) or (run.custom and "report" in stages):
        needs.add("train")
    if "precompute" in stages:
        needs.update(("regression", "test"))
    if "report" in stages and not run.custom:
        needs.add("test")
    for split in sorted(needs):
        run.dataset(split, augment=run.opts.augment and split == "train")
    if "optimize" in stages and run.optimize_pending():
        run.backbone  # noqa: B018 -- a missing or broken model fails before any stage starts
    if bundle is not None:
        run.check_bundle(bundle)
    run.experiment  # noqa: B018 -- a --log-to package that is missing fails now


def run_training(settings: Settings, dist: Distributed) -> RunResult:
    """Import a bundle if given, write config.yaml, run the stages."""
    from offline_tools.stages import TrainingRun

    run = TrainingRun(settings.options, settings.config, dist)
    _preflight(run, settings.stages, settings.bundle)
    paths = RunPaths(settings.options.out)
    if dist.is_main:
        paths.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths.config, effective_yaml(settings))
        if settings.bundle is not None:
            keep = "regress" not in settings.stages
            run.import_bundle(settings.bundle, settings.options.bundle, keep_regressor=keep)
    dist.barrier()
    return run.run(settings.stages, settings.force)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 ok, 1 optimization failure, 2 bad input)."""
    args = build_parser().parse_args(argv)  # --help and argument errors end here, instantly
    from offline_tools.datasets.base import DatasetError
    from offline_tools.distributed import Distributed, init_distributed
    from offline_tools.experiment_log import ExperimentLogError
    from skp_core.backbone import BackboneError
    from skp_core.bundle import BundleError
    from skp_core.checkpoint import CheckpointError
    from skp_core.optimize import OptimizationError

    dist = Distributed()
    start = time.perf_counter()
    try:
        settings = resolve_settings(args)
        dist, device = init_distributed(settings.options.device)
        settings.options.device = device
        result = run_training(settings, dist)
        if dist.is_main:
            print(_summary(settings, result, time.perf_counter() - start), flush=True)
        return 0
    except (
        ConfigError,
        StageError,
        DatasetError,
        BackboneError,
        BundleError,
        ExperimentLogError,
    ) as error:
        return _error(str(error), 2)
    except (OptimizationError, CheckpointError) as error:
        return _error(str(error), 1)
    except KeyboardInterrupt:
        return _error("interrupted; finished stages and the last checkpoint are kept", 130)
    finally:
        dist.close()


if __name__ == "__main__":
    sys.exit(main())
