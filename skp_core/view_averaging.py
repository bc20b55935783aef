"""Test-time augmentation (METHOD §5): average keypoint maps over random affine views.

Each view is a warped copy of the image; its maps are warped back into the original frame,
summed, and divided by how many views saw each pixel (zero padding leaves parts of a warped
view empty, so a plain mean would darken the borders).
"""

from __future__ import annotations

import torch
from torch import Tensor

from skp_core.affine import identity_affine, invert_affine, sample_affine, warp
from skp_core.readout import upsample_maps


def view_transforms(
    num_images: int,
    num_views: int,
    generator: torch.Generator,
    *,
    include_identity: bool = False,
    device: torch.device | str | None = None,
    rotation_deg: float = 15.0,
    scale_range: tuple[float, float] = (0.8, 1.0),
    translation: float = 0.25,
) -> Tensor:
    """Per-image view transforms [num_images, num_views, 2, 3].

    Upstream draws all views at random; `include_identity` makes view 0 the un-warped image,
    which lowers variance when only a few views are affordable.
    """
    if num_views < 1:
        raise ValueError(f"num_views must be at least 1, got {num_views}")
    thetas = sample_affine(
        num_images * num_views,
        generator,
        rotation_deg=rotation_deg,
        scale_range=scale_range,
        translation=translation,
        device=device,
    ).view(num_images, num_views, 2, 3)
    if include_identity:
        thetas[:, 0] = identity_affine(num_images, device=thetas.device, dtype=thetas.dtype)
    return thetas


def warp_views(images: Tensor, thetas: Tensor) -> Tensor:
    """All views of all images as one batch [B*V, C, H, W], image-major."""
    batch, views = thetas.shape[:2]
    repeated = images.repeat_interleave(views, dim=0)
    return warp(repeated, thetas.reshape(batch * views, 2, 3))


def average_views(view_maps: Tensor, thetas: Tensor, out_size: int) -> Tensor:
    """Maps of the views [B*V, K, R, R] -> view-averaged maps [B, K, out_size, out_size].

    Loops over the (few) views, never over tokens or pixels, so memory stays at one view's
    worth of full-resolution maps per image.
    """
    batch, views = thetas.shape[:2]
    maps = view_maps.reshape(batch, views, *view_maps.shape[1:])
    inverse = invert_affine(thetas)
    total = None
    coverage = None
    ones = torch.ones(batch, 1, out_size, out_size, device=maps.device, dtype=maps.dtype)
    for v in range(views):
        up = upsample_maps(maps[:, v], out_size)
        back = warp(up, inverse[:, v].to(up.dtype))
        seen = warp(ones, inverse[:, v].to(up.dtype))
        total = back if total is None else total + back
        coverage = seen if coverage is None else coverage + seen
    averaged = total / coverage
    return torch.nan_to_num(averaged, nan=0.0, posinf=0.0, neginf=0.0)
