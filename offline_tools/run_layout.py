"""The layout of an skp-train run: stage names, run options and where outputs live.

Kept apart from the stage code (offline_tools.stages, which needs torch and diffusers) so that
skp-train can build its parser, answer --help and reject bad arguments without importing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BUNDLE_STAGES",
    "CUSTOM_STAGES",
    "PRECOMPUTE_SPLITS",
    "STAGES",
    "RunOptions",
    "RunPaths",
    "StageError",
    "applicable_stages",
]

STAGES: tuple[str, ...] = ("optimize", "select", "precompute", "regress", "evaluate", "report")
CUSTOM_STAGES: tuple[str, ...] = ("optimize", "select", "report")
BUNDLE_STAGES: tuple[str, ...] = ("precompute", "regress", "evaluate", "report")
PRECOMPUTE_SPLITS: tuple[str, ...] = ("regression", "test")


class StageError(Exception):
    """A stage cannot run as asked (missing inputs, a stage that does not apply): exit 2."""


@dataclass
class RunOptions:
    """Everything of a run that is not a method hyperparameter."""

    dataset: str
    data_root: Path
    model: str
    out: Path
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 20
    num_workers: int = 2
    max_regression_images: int = 50_000
    allow_pickle: bool = False
    checkpoint_every: int = 50
    augment: bool = True
    bundle: Path | None = None
    report_images: int = 6
    precompute_chunk: int = 500
    progress: bool = True
    validation: bool = False
    max_len: int | None = None
    log_to: str | None = None


class RunPaths:
    """Where each stage's outputs live inside RUN_DIR."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.context = self.root / "context.safetensors"
        self.selection = self.root / "selection.json"
        self.regressor = self.root / "regressor.safetensors"
        self.metrics = self.root / "metrics.json"
        self.per_image_errors = self.root / "per_image_errors.csv"
        self.bundle = self.root / "bundle"
        self.report = self.root / "report"
        self.config = self.root / "config.yaml"
        self.state = self.root / "stages.json"

    def keypoints(self, split: str) -> Path:
        return self.root / f"keypoints_{split}.safetensors"


def applicable_stages(dataset: str, from_bundle: bool) -> tuple[str, ...]:
    """Stages that make sense for this dataset (custom folders have no annotations)."""
    if dataset == "custom":
        return ("report",) if from_bundle else CUSTOM_STAGES
    return BUNDLE_STAGES if from_bundle else STAGES
