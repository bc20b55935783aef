"""Several subjects per image: the reference's ``num_subjects`` (METHOD §3 steps 2 and 4).

With n subjects (two people, a flock of birds) a good keypoint token attends to the same part
of every instance, so its map has n peaks. The reference code then finds n maxima per map by a
repeated argmax that zeroes a disc of radius 0.05 * H around each maximum found, and uses the
mean of one peak-1 Gaussian per maximum (peak 1/n) as the target of both the candidate ranking
and the sharpening loss. With n = 1 every function here is the single-subject computation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from skp_core.gaussian import argmax_locations, gaussian_maps, pixel_centre_locations

__all__ = [
    "SUBJECT_MASK_FRACTION",
    "subject_gaussian_maps",
    "subject_locations",
    "subject_peak_indices",
]

SUBJECT_MASK_FRACTION = 0.05
"""Radius of the disc zeroed around each maximum found, as a fraction of the map height."""


def _check_subjects(maps: Tensor, num_subjects: int) -> None:
    if maps.dim() < 2:
        raise ValueError(f"maps must have shape [..., H, W], got {tuple(maps.shape)}")
    if isinstance(num_subjects, bool) or not isinstance(num_subjects, int) or num_subjects < 1:
        raise ValueError(f"num_subjects must be a positive integer, got {num_subjects!r}")


@torch.no_grad()
def subject_peak_indices(maps: Tensor, num_subjects: int) -> Tensor:
    """Flat pixel indices [..., n] of each map's n maxima, strongest first.

    After each maximum, the pixels whose index (row i, col j) lies within 0.05 * H of that
    maximum's pixel centre (r + 0.5, c + 0.5) are multiplied by zero, as in the reference's
    ``mask_radius`` (which compares integer indices with half-offset centres, so the disc is
    shifted by half a pixel towards the bottom right). The input is not modified. Ties go to the
    first pixel in row-major order.
    """
    _check_subjects(maps, num_subjects)
    height, width = maps.shape[-2], maps.shape[-1]
    work = maps.detach().reshape(-1, height, width)
    radius_sq = (SUBJECT_MASK_FRACTION * height) ** 2
    dtype = work.dtype if work.dtype.is_floating_point else torch.float32
    rows = torch.arange(height, device=work.device, dtype=dtype)
    cols = torch.arange(width, device=work.device, dtype=dtype)
    found = []
    for subject in range(num_subjects):
        index = work.flatten(1).argmax(dim=-1)
        found.append(index)
        if subject == num_subjects - 1:
            break
        row = torch.div(index, width, rounding_mode="floor").to(dtype) + 0.5
        col = (index % width).to(dtype) + 0.5
        dist_sq = (rows[None, :, None] - row[:, None, None]).square() + (
            cols[None, None, :] - col[:, None, None]
        ).square()
        work = work * (dist_sq > radius_sq).to(work.dtype)
    return torch.stack(found, dim=-1).reshape(*maps.shape[:-2], num_subjects)


def subject_locations(maps: Tensor, num_subjects: int = 1) -> Tensor:
    """Normalized (x, y) pixel centres [..., n, 2] of each map's n maxima, strongest first.

    With one subject this is :func:`~skp_core.gaussian.argmax_locations` with a subject axis.
    """
    _check_subjects(maps, num_subjects)
    if num_subjects == 1:
        return argmax_locations(maps).unsqueeze(-2)
    height, width = maps.shape[-2], maps.shape[-1]
    index = subject_peak_indices(maps, num_subjects)
    dtype = maps.dtype if maps.dtype.is_floating_point else torch.float32
    return pixel_centre_locations(index, height, width, dtype)


def subject_gaussian_maps(locations: Tensor, height: int, width: int, sigma: float) -> Tensor:
    """The mean of peak-1 Gaussians at ``locations`` [..., n, 2] -> targets [..., H, W].

    The reference's ``gaussian_circles``: with n subjects every peak is 1/n (for subjects
    farther apart than a few sigma). With one subject this is the single Gaussian itself.
    """
    if locations.dim() < 2 or locations.shape[-1] != 2:
        raise ValueError(f"locations must have shape [..., n, 2], got {tuple(locations.shape)}")
    if locations.shape[-2] == 1:
        return gaussian_maps(locations[..., 0, :], height, width, sigma)
    return gaussian_maps(locations, height, width, sigma).mean(dim=-3)
