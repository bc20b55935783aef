"""Real photos shipped with scikit-image and matplotlib, as the tests and demos use them."""

from __future__ import annotations

import numpy as np
import torch

PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "cat")


def photo(name: str) -> np.ndarray:
    """uint8 HxWx3 RGB."""
    import skimage.data

    return np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])


def photo_tensor(name: str) -> torch.Tensor:
    """float [3, H, W] in [0, 1]."""
    return torch.from_numpy(photo(name)).permute(2, 0, 1).float() / 255.0


def photo_tensors(names=PHOTO_NAMES) -> list[torch.Tensor]:
    return [photo_tensor(n) for n in names]
