"""Gaussian candidate ranking (METHOD §3 step 2).

A token is a good keypoint candidate when its map, read as a distribution over space, looks
like a single Gaussian blob centred at its own maximum. The score is ``KL(G || S)`` with ``S``
the spatial softmax of the map and ``G`` the normalized Gaussian at the map's argmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from skp_core.gaussian import argmax_locations, gaussian_maps

__all__ = ["GAUSSIAN_EPSILON", "gaussian_kl_scores", "rank_gaussian_candidates"]

#: Added to the unnormalized Gaussian before normalizing it, as upstream, so log G is finite.
GAUSSIAN_EPSILON = 1e-5


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32: a spatial softmax over 16k pixels is not meaningful in half precision."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


@torch.no_grad()
def gaussian_kl_scores(maps: Tensor, sigma: float = 2.0) -> Tensor:
    """``KL(G || spatial softmax)`` per map: scores [...] for maps [..., H, W]; lower is better."""
    if maps.dim() < 2:
        raise ValueError(f"maps must have shape [..., H, W], got {tuple(maps.shape)}")
    height, width = maps.shape[-2], maps.shape[-1]
    work = maps.detach().to(_working_dtype(maps.dtype))
    target = gaussian_maps(argmax_locations(work), height, width, sigma) + GAUSSIAN_EPSILON
    target = target.flatten(-2)
    target = target / target.sum(dim=-1, keepdim=True)
    log_s = F.log_softmax(work.flatten(-2), dim=-1)
    return (target * (target.log() - log_s)).sum(dim=-1)


@torch.no_grad()
def rank_gaussian_candidates(maps: Tensor, num_candidates: int = 25, sigma: float = 2.0) -> Tensor:
    """Indices [B, num_candidates] of the tokens whose maps [B, T, H, W] are most Gaussian.

    Best (lowest KL) first; equal scores keep ascending token order (stable sort), so the
    result is deterministic. ``num_candidates`` is clamped to T.
    """
    if maps.dim() != 4:
        raise ValueError(f"maps must have shape [B, T, H, W], got {tuple(maps.shape)}")
    if num_candidates < 0:
        raise ValueError(f"num_candidates must be >= 0, got {num_candidates}")
    scores = gaussian_kl_scores(maps, sigma)
    order = torch.sort(scores, dim=-1, stable=True).indices
    return order[:, : min(num_candidates, maps.shape[1])]
