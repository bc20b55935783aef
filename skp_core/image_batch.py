"""Images of any size -> the backbone's square input batch (aspect ignored, as upstream)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["image_of", "resize_images", "stack_resized"]


def image_of(item: Any) -> Tensor:
    """The image tensor of a dataset item (tensor or dict with an "image" entry)."""
    image = item["image"] if isinstance(item, dict) else item
    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError("training images must be float tensors [3, H, W] in [0, 1]")
    return image


def resize_images(images: Tensor, size: int) -> Tensor:
    """Batch [B, 3, H, W] to the backbone's square input size (aspect ignored, as upstream)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)


def stack_resized(images: Sequence[Tensor], size: int, device: torch.device) -> Tensor:
    """Images of any sizes [3, H, W] -> one batch [B, 3, size, size] on the device."""
    return torch.cat([resize_images(image[None].to(device), size) for image in images])
