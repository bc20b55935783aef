"""Localization (sharpening) and equivariance losses (METHOD §3 steps 4-6).

Both are plain means over every element of [B, K, H, W], so the mean over the images of a
batch equals upstream's average of per-image losses (all images have the same shape).
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor

from skp_core.affine import invert_affine, warp
from skp_core.subjects import subject_gaussian_maps, subject_locations

__all__ = [
    "EQUIVARIANCE_WEIGHT",
    "LOCALIZATION_WEIGHT",
    "LossTerms",
    "equivariance_loss",
    "keypoint_losses",
    "localization_loss",
]

#: Weight of the equivariance term in the reference code (the paper text differs).
EQUIVARIANCE_WEIGHT = 1000.0
#: Weight of the localization (sharpening) term in the reference code.
LOCALIZATION_WEIGHT = 100.0


class LossTerms(NamedTuple):
    """The weighted total (to backpropagate) and the two unweighted terms (to log)."""

    total: Tensor
    equivariance: Tensor
    localization: Tensor


def localization_loss(maps_sel: Tensor, sigma: float = 2.0, num_subjects: int = 1) -> Tensor:
    """MSE between each map [B, K, H, W] and a peak-1 Gaussian at its own argmax.

    With ``num_subjects`` n > 1 the target is the mean of n such Gaussians at the map's n
    maxima (:mod:`skp_core.subjects`). The target is built from detached maps, so the gradient
    only sharpens the map toward it.
    """
    if maps_sel.dim() < 2:
        raise ValueError(f"maps_sel must have shape [..., H, W], got {tuple(maps_sel.shape)}")
    height, width = maps_sel.shape[-2], maps_sel.shape[-1]
    locations = subject_locations(maps_sel.detach(), num_subjects)
    target = subject_gaussian_maps(locations, height, width, sigma)
    return F.mse_loss(maps_sel, target.to(maps_sel.dtype))


def equivariance_loss(maps_sel: Tensor, maps_transformed_sel: Tensor, theta: Tensor) -> Tensor:
    """MSE between the maps of an image and the inverse-warped maps of its transformed copy.

    ``theta`` [B, 2, 3] produced the transformed image (``warp(image, theta)``); warping its
    maps with ``theta^-1`` brings them back. Out-of-view zeros are compared too (no mask),
    as upstream.
    """
    if maps_sel.shape != maps_transformed_sel.shape:
        raise ValueError(
            f"shape mismatch: {tuple(maps_sel.shape)} vs {tuple(maps_transformed_sel.shape)}"
        )
    restored = warp(maps_transformed_sel, invert_affine(theta))
    return F.mse_loss(maps_sel, restored)


def keypoint_losses(
    maps_sel: Tensor,
    maps_transformed_sel: Tensor,
    theta: Tensor,
    sigma: float = 2.0,
    equivariance_weight: float = EQUIVARIANCE_WEIGHT,
    localization_weight: float = LOCALIZATION_WEIGHT,
    num_subjects: int = 1,
) -> LossTerms:
    """``equivariance_weight * equivariance + localization_weight * localization``.

    The localization term is taken on the untransformed maps only (METHOD §3 step 4).
    """
    equivariance = equivariance_loss(maps_sel, maps_transformed_sel, theta)
    localization = localization_loss(maps_sel, sigma, num_subjects)
    total = equivariance_weight * equivariance + localization_weight * localization
    return LossTerms(total, equivariance, localization)
