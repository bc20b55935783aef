"""Training checkpoints: tensors in safetensors, everything else in JSON, replaced atomically.

A killed run must resume from its last checkpoint, so a checkpoint is written beside the old
one and renamed over it only when complete; a crash mid-write leaves the previous one intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from skp_core.atomic_files import atomic_write_text
from skp_core.safetensors_io import save_file

TENSORS = "checkpoint.safetensors"
META = "checkpoint.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read: the message names the file and what to do."""


def save_checkpoint(
    directory: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]
) -> None:
    """Write tensors, then the JSON that names their step (the JSON is the commit point)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    step = meta.get("step")
    tensor_name = f"checkpoint-{step}.safetensors" if step is not None else TENSORS
    save_file(directory / tensor_name, tensors)
    text = json.dumps({**meta, "tensors": tensor_name}, indent=2, sort_keys=True)
    atomic_write_text(directory / META, text)
    # Older tensor files are no longer referenced by the committed JSON.
    for old in directory.glob("checkpoint-*.safetensors"):
        if old.name != tensor_name:
            old.unlink(missing_ok=True)


def has_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / META).is_file()


def load_checkpoint(directory: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read the last committed checkpoint; corrupt files raise CheckpointError."""
    directory = Path(directory)
    meta_path = directory / META
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint in {directory} ({META} is missing)") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {meta_path} is unreadable ({exc}); delete {directory} to start over"
        ) from None
    tensor_path = directory / str(meta.get("tensors", TENSORS))
    try:
        tensors = load_file(str(tensor_path))
    except (OSError, SafetensorError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint tensors {tensor_path} are unreadable ({exc}); "
            f"delete {directory} to start over"
        ) from None
    return tensors, meta
