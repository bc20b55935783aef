"""Argmax pixel-centre locations and Gaussian targets (METHOD §3 steps 2 and 4).

Locations are normalized (x, y) in [0, 1] with the pixel-centre convention of
docs/architecture.md: pixel (row i, col j) of an H x W grid sits at ((j + 0.5) / W, (i + 0.5) / H).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["argmax_locations", "gaussian_maps", "pixel_centre_locations"]


def pixel_centre_locations(
    flat_index: Tensor, height: int, width: int, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Normalized (x, y) [..., 2] of the centres of pixels given by row-major flat indices."""
    rows = torch.div(flat_index, width, rounding_mode="floor")
    cols = flat_index - rows * width
    x = (cols.to(dtype) + 0.5) / width
    y = (rows.to(dtype) + 0.5) / height
    return torch.stack((x, y), dim=-1)


def argmax_locations(maps: Tensor) -> Tensor:
    """Normalized (x, y) pixel centre of each map's maximum, shape [..., 2].

    Ties go to the first pixel in row-major order (``torch.argmax`` on the flattened map),
    which matches upstream's ``find_max_pixel``.
    """
    if maps.dim() < 2:
        raise ValueError(f"maps must have shape [..., H, W], got {tuple(maps.shape)}")
    height, width = maps.shape[-2], maps.shape[-1]
    flat_index = maps.detach().flatten(-2).argmax(dim=-1)
    dtype = maps.dtype if maps.dtype.is_floating_point else torch.float32
    return pixel_centre_locations(flat_index, height, width, dtype)


def gaussian_maps(locations: Tensor, height: int, width: int, sigma: float) -> Tensor:
    """Unnormalized Gaussians (peak 1) at normalized (x, y) ``locations`` [..., 2] -> [..., H, W].

    ``sigma`` is in pixels of the H x W grid and values are taken at pixel centres, so a
    location on a pixel centre gives exactly 1 there (upstream's ``gaussian_circle``).
    """
    if locations.shape[-1] != 2:
        raise ValueError(f"locations must have shape [..., 2], got {tuple(locations.shape)}")
    dtype = locations.dtype if locations.dtype.is_floating_point else torch.float32
    locations = locations.to(dtype)
    cols = torch.arange(width, device=locations.device, dtype=dtype) + 0.5
    rows = torch.arange(height, device=locations.device, dtype=dtype) + 0.5
    dx = cols - locations[..., 0:1] * width  # [..., W]
    dy = rows - locations[..., 1:2] * height  # [..., H]
    dist_sq = dy.unsqueeze(-1).square() + dx.unsqueeze(-2).square()
    return torch.exp(-dist_sq / (2.0 * sigma * sigma))
