"""Training checkpoints: tensors in safetensors, everything else in JSON, replaced atomically.

A killed run must resume from its last checkpoint, so a checkpoint is written beside the old
one and renamed over it only when complete; a crash mid-write leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

TENSORS = "checkpoint.safetensors"
META = "checkpoint.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read: the message names the file and what to do."""


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, fsync it, rename it over `path`.

    A crash at any point leaves either the old file or the new one, never a partial file.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(
    directory: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]
) -> None:
    """Write tensors, then the JSON that names their step (the JSON is the commit point)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    step = meta.get("step")
    tensor_name = f"checkpoint-{step}.safetensors" if step is not None else TENSORS
    payload = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(directory / tensor_name, lambda tmp: save_file(payload, tmp))
    text = json.dumps({**meta, "tensors": tensor_name}, indent=2, sort_keys=True)
    atomic_write(directory / META, lambda tmp: Path(tmp).write_text(text))
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
