"""Keypoint read-out from (view-averaged) attention maps.

METHOD §5 reads each keypoint as the argmax pixel centre; the evaluation protocol keeps that
by default, and the reference's weighted average around the argmax is its alternative.
Robots also want sub-pixel positions (a peak between two pixels should not jitter by a whole
pixel from frame to frame) and a score to threshold on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from skp_core.gaussian import argmax_locations

READOUTS = ("argmax", "subpixel", "weighted_avg")

WEIGHTED_AVG_REFERENCE_SIZE = 512
"""The reference's weighted-average distance is in pixels of a 512-pixel map; skp scales it with
the map size, so the same setting covers the same share of the image at any resolution."""


def peak_scores(maps: Tensor) -> Tensor:
    """Score per map [...]: the peak value of the map.

    Maps are cross-attention probabilities (softmax over tokens), so the peak is the largest
    share of a pixel's attention that this keypoint's token receives: in [0, 1], high for a
    confident, well-localized keypoint.
    """
    return maps.flatten(-2).amax(dim=-1)


def _log_parabola_offset(left: Tensor, centre: Tensor, right: Tensor) -> Tensor:
    """Vertex of the parabola through log-values at -1, 0, +1, clamped to half a pixel.

    Exact for a Gaussian peak (its log is a parabola); the clamp keeps odd shapes on the pixel.
    """
    eps = 1e-12
    lo, c, hi = (v.clamp_min(eps).log() for v in (left, centre, right))
    curvature = lo - 2 * c + hi
    offset = 0.5 * (lo - hi) / torch.where(curvature < 0, curvature, torch.full_like(c, -1.0))
    offset = torch.where(curvature < 0, offset, torch.zeros_like(offset))
    return offset.clamp(-0.5, 0.5)


def subpixel_locations(maps: Tensor, peaks: Tensor | None = None) -> Tensor:
    """Normalized (x, y) [..., 2]: argmax refined by a log-parabola fit along each axis.

    ``peaks`` [..., m] (flat pixel indices) refines those pixels instead, giving [..., m, 2].
    At the border (no neighbour on one side) that axis keeps the pixel centre.
    """
    height, width = maps.shape[-2:]
    flat = maps.reshape(-1, height * width)
    if peaks is None:
        index = flat.argmax(dim=-1, keepdim=True)
    else:
        index = peaks.reshape(flat.shape[0], -1)
    row = torch.div(index, width, rounding_mode="floor")
    col = index % width

    def at(dr: int, dc: int) -> Tensor:
        r = (row + dr).clamp(0, height - 1)
        c = (col + dc).clamp(0, width - 1)
        return flat.gather(-1, r * width + c)

    centre = at(0, 0)
    dx = _log_parabola_offset(at(0, -1), centre, at(0, 1))
    dy = _log_parabola_offset(at(-1, 0), centre, at(1, 0))
    inner_x = (col > 0) & (col < width - 1)
    inner_y = (row > 0) & (row < height - 1)
    x = col.to(flat.dtype) + torch.where(inner_x, dx, torch.zeros_like(dx))
    y = row.to(flat.dtype) + torch.where(inner_y, dy, torch.zeros_like(dy))
    xy = torch.stack(((x + 0.5) / width, (y + 0.5) / height), dim=-1)
    if peaks is None:
        return xy.reshape(*maps.shape[:-2], 2)
    return xy.reshape(*peaks.shape, 2)


def degenerate_maps(maps: Tensor, rel_tol: float = 1e-6) -> Tensor:
    """True [...] for maps [..., H, W] with no peak to read: any NaN/inf, or flat.

    Flat means the spread (max - min) is within ``rel_tol`` of the peak, so the argmax is an
    arbitrary pixel (the first one: the image corner) and the score says nothing. A context
    that saturates attention gives all-zero maps; a broken backbone gives NaN.
    """
    flat = maps.flatten(-2)
    finite = torch.isfinite(flat).all(dim=-1)
    high, low = flat.amax(dim=-1), flat.amin(dim=-1)
    spread = high - low
    no_peak = spread <= rel_tol * high.abs().clamp_min(torch.finfo(flat.dtype).tiny)
    return ~finite | no_peak


def weighted_average_locations(
    maps: Tensor, distance: float = 5.0, peaks: Tensor | None = None
) -> Tensor:
    """Normalized (x, y) [..., 2]: the centroid of each map near its argmax.

    The reference's ``max_loc_strategy=weighted_avg``:
    Values farther than ``distance`` map pixels from the argmax pixel are ignored (a negative
    distance, the reference's -1, keeps the whole map); the rest weigh their pixel centres.
    The input is not modified (the reference zeroes its argument in place).

    ``peaks`` [..., m] (flat pixel indices of several maxima, one per subject) gives one
    centroid per peak, [..., m, 2]: each over the pixels nearer to that peak than to the
    others (ties to the earlier peak), within ``distance`` of it.
    """
    height, width = maps.shape[-2:]
    weights = maps.reshape(-1, 1, height, width)
    rows = torch.arange(height, device=maps.device, dtype=weights.dtype)
    cols = torch.arange(width, device=maps.device, dtype=weights.dtype)
    if peaks is None:
        index = weights.flatten(1).argmax(dim=-1, keepdim=True)
    else:
        index = peaks.reshape(weights.shape[0], -1)
    if distance >= 0 or index.shape[1] > 1:
        peak_row = torch.div(index, width, rounding_mode="floor").to(weights.dtype)
        peak_col = (index % width).to(weights.dtype)
        dist = torch.sqrt(
            (rows[None, None, :, None] - peak_row[:, :, None, None]) ** 2
            + (cols[None, None, None, :] - peak_col[:, :, None, None]) ** 2
        )  # [N, m, H, W]
        outside = torch.zeros_like(dist, dtype=torch.bool)
        if distance >= 0:
            outside = dist > distance
        if index.shape[1] > 1:
            nearest = dist.argmin(dim=1, keepdim=True)
            mine = torch.arange(index.shape[1], device=maps.device)[None, :, None, None]
            outside = outside | (nearest != mine)
        weights = torch.where(outside, torch.zeros_like(dist), weights)
    total = weights.sum(dim=(-2, -1)) + 1e-6  # the reference's guard against an empty map
    y = (weights.sum(dim=-1) * rows).sum(dim=-1) / total
    x = (weights.sum(dim=-2) * cols).sum(dim=-1) / total
    xy = torch.stack(((x + 0.5) / width, (y + 0.5) / height), dim=-1)
    if peaks is None:
        return xy.reshape(*maps.shape[:-2], 2)
    return xy.reshape(*peaks.shape, 2)


def read_keypoints(
    maps: Tensor, readout: str = "argmax", distance: float = 5.0
) -> tuple[Tensor, Tensor]:
    """Locations [..., 2] (normalized x, y) and scores [...] of maps [..., H, W].

    ``distance`` (weighted_avg only) is in pixels of a 512-pixel map, scaled to these maps.
    """
    if readout == "argmax":
        locations = argmax_locations(maps)
    elif readout == "subpixel":
        locations = subpixel_locations(maps)
    elif readout == "weighted_avg":
        scale = max(maps.shape[-2:]) / WEIGHTED_AVG_REFERENCE_SIZE
        locations = weighted_average_locations(maps, distance * scale if distance >= 0 else -1)
    else:
        raise ValueError(f"unknown read-out {readout!r}; choose one of {READOUTS}")
    return locations, peak_scores(maps)


def upsample_maps(maps: Tensor, size: int) -> Tensor:
    """Bilinear upsampling of maps [B, K, R, R] to [B, K, size, size] (METHOD §5)."""
    if maps.shape[-1] == size and maps.shape[-2] == size:
        return maps
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)
