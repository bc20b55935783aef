"""Experiment logging for skp-train (`--log-to tensorboard|wandb`), like the reference's --wandb.

Researchers compare runs in TensorBoard or Weights & Biases: the loss terms of every step, the
selection counts, the metrics. Both are optional: the package is imported only when asked
for, a missing one is one clear error before any stage starts, and nothing needs the network
(TensorBoard writes event files under RUN_DIR/logs; wandb runs in whatever mode its own
settings say, e.g. WANDB_MODE=offline, and writes under RUN_DIR too).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

LOG_TARGETS = ("tensorboard", "wandb")


class ExperimentLogError(RuntimeError):
    """The requested logger cannot be used (package missing); the message says what to do."""


class ExperimentLog:
    """Scalars by step, selection counts and final metrics, to one backend (or none)."""

    def __init__(self, target: str | None, folder: Path, config: Mapping[str, Any]) -> None:
        self.target = target
        self._writer: Any = None
        self._run: Any = None
        if target is None:
            return
        if target not in LOG_TARGETS:
            raise ExperimentLogError(f"--log-to must be one of {LOG_TARGETS}, got {target!r}")
        folder.mkdir(parents=True, exist_ok=True)
        if target == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ExperimentLogError(
                    "--log-to tensorboard needs the tensorboard package: pip install tensorboard"
                ) from None
            self._writer = SummaryWriter(log_dir=str(folder / "tensorboard"))
            self._writer.add_text("config", _config_text(config))
        else:
            try:
                import wandb
            except ImportError:
                raise ExperimentLogError(
                    "--log-to wandb needs the wandb package: pip install wandb (set "
                    "WANDB_MODE=offline to log without network)"
                ) from None
            self._run = wandb.init(project="skp", dir=str(folder), config=dict(config))

    @property
    def enabled(self) -> bool:
        return self.target is not None

    def scalars(self, prefix: str, values: Mapping[str, Any], step: int) -> None:
        """Every finite number of ``values`` as ``prefix/name`` at ``step``."""
        numbers = {
            f"{prefix}/{name}": float(value)
            for name, value in values.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and name != "step"
        }
        if self._writer is not None:
            for tag, value in numbers.items():
                self._writer.add_scalar(tag, value, step)
        elif self._run is not None:
            self._run.log(numbers, step=step)

    def selection_counts(self, counts: Any, selected: Any, step: int) -> None:
        """How often each token was chosen, and the chosen tokens' counts by keypoint."""
        counts = [int(c) for c in counts]
        chosen = {f"keypoint{i}_token{int(t)}": counts[int(t)] for i, t in enumerate(selected)}
        self.scalars("select/count", chosen, step)
        if self._writer is not None:
            import numpy as np

            tokens = np.repeat(np.arange(len(counts)), counts)
            if tokens.size:
                self._writer.add_histogram("select/chosen_token", tokens, step)
        elif self._run is not None:
            import wandb

            table = wandb.Table(columns=["token", "count"], data=list(enumerate(counts)))
            self._run.log({"select/counts": table}, step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._run is not None:
            self._run.finish()
        self._writer = self._run = None


def _config_text(config: Mapping[str, Any]) -> str:
    return "\n".join(f"    {name}: {value}" for name, value in config.items())


__all__ = ["LOG_TARGETS", "ExperimentLog", "ExperimentLogError"]
