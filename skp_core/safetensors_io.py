"""safetensors files whose bytes depend only on their content.

The safetensors library writes its ``__metadata__`` map in hash-map order, which changes
from one process to the next, so two identical runs would write different bytes (and
different hashes in a bundle). Here the header is re-serialized with sorted metadata keys;
the tensor entries keep the library's order, which follows the data offsets, and the data
section is untouched, so any safetensors reader loads the result unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
from torch import Tensor

from skp_core.atomic_files import atomic_write_bytes

_PREFIX = 8  # little-endian u64 header length
_ALIGN = 8  # the format pads its header with spaces to a multiple of 8 bytes


def serialize(tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Bytes of a safetensors file holding ``tensors``; equal inputs give equal bytes."""
    payload = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    data = safetensors.torch.save(payload, metadata=metadata)
    length = int.from_bytes(data[:_PREFIX], "little")
    header = json.loads(data[_PREFIX : _PREFIX + length])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % _ALIGN)
    return len(text).to_bytes(_PREFIX, "little") + text + data[_PREFIX + length :]


def save_file(
    path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write `serialize`'s bytes to ``path`` atomically."""
    atomic_write_bytes(Path(path), serialize(tensors, metadata))


__all__ = ["save_file", "serialize"]
