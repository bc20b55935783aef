"""Candidate ranking (METHOD §3 step 2): which tokens furthest point sampling chooses from.

A token is a good keypoint candidate when its map, read as a distribution over space, looks
like a single Gaussian blob centred at its own maximum. The score is ``KL(G || S)`` with ``S``
the spatial softmax of the map and ``G`` the normalized Gaussian at the map's argmax. The
reference code's other ``top_k_strategy`` values are here too: ``entropy`` (lowest entropy of
the spatial softmax first) and ``consistent`` (the first tokens, whatever their maps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from skp_core.subjects import subject_gaussian_maps, subject_locations

__all__ = [
    "GAUSSIAN_EPSILON",
    "TOP_K_STRATEGIES",
    "entropy_scores",
    "gaussian_kl_scores",
    "gaussian_kl_scores_reference",
    "rank_candidates",
    "rank_entropy_candidates",
    "rank_gaussian_candidates",
]

TOP_K_STRATEGIES = ("gaussian", "entropy", "consistent")

#: Added to the unnormalized Gaussian before normalizing it, as upstream, so log G is finite.
GAUSSIAN_EPSILON = 1e-5


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32: a spatial softmax over 16k pixels is not meaningful in half precision."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


@torch.no_grad()
def gaussian_kl_scores(
    maps: Tensor, sigma: float = 2.0, chunk: int = 64, num_subjects: int = 1
) -> Tensor:
    """``KL(G || spatial softmax)`` per map: scores [...] for maps [..., H, W]; lower is better.

    The same number as :func:`gaussian_kl_scores_reference` without its five map-sized
    temporaries. G is the normalized mean of one Gaussian per subject at the map's maxima,
    ``G = (g + eps) / Z`` with ``g = mean_s gy_s gx_s^T`` separable per subject (sum G = 1), and
    ``log S = A - logsumexp(A)``, so
    ``KL = sum G log G - (sum g A + eps sum A) / Z + logsumexp(A)``, where ``sum g A`` is the
    mean of ``gy_s^T A gx_s``; only ``sum G log G`` needs G at every pixel (in chunks of maps).
    """
    if maps.dim() < 2:
        raise ValueError(f"maps must have shape [..., H, W], got {tuple(maps.shape)}")
    height, width = maps.shape[-2], maps.shape[-1]
    work = maps.detach().to(_working_dtype(maps.dtype))
    flat = work.reshape(-1, height, width)
    n = flat.shape[0]
    locations = subject_locations(flat, num_subjects)  # [N, n, 2] normalized (x, y)
    dtype, device = flat.dtype, flat.device
    cols = torch.arange(width, device=device, dtype=dtype) + 0.5
    rows = torch.arange(height, device=device, dtype=dtype) + 0.5
    scale = 2.0 * sigma * sigma
    gx = torch.exp(-(cols - locations[..., 0:1] * width).square() / scale)  # [N, n, W]
    gy = torch.exp(-(rows - locations[..., 1:2] * height).square() / scale)  # [N, n, H]
    eps = GAUSSIAN_EPSILON
    z = (gy.sum(-1) * gx.sum(-1)).mean(-1) + eps * height * width
    # gy_s^T A gx_s for every subject s: the diagonal of (gy A) gx^T, [N, n, n].
    g_dot_a = torch.bmm(torch.bmm(gy, flat), gx.transpose(1, 2))
    g_dot_a = g_dot_a.diagonal(dim1=-2, dim2=-1).mean(-1)
    total = flat.sum((-2, -1))
    lse = torch.logsumexp(flat.view(n, -1), -1)
    g_log_g = torch.empty(n, dtype=dtype, device=device)
    for start in range(0, n, chunk):
        part_y, part_x = gy[start : start + chunk], gx[start : start + chunk]
        if num_subjects == 1:
            part = part_y[:, 0, :, None] * part_x[:, 0, None, :] + eps
        else:
            part = torch.einsum("nsh,nsw->nhw", part_y, part_x) / num_subjects + eps
        g_log_g[start : start + chunk] = (part * part.log()).sum((-2, -1))
    z64 = z.double()
    kl = (g_log_g.double() - g_dot_a.double() - eps * total.double()) / z64
    kl = kl - z64.log() + lse.double()
    return kl.to(dtype).view(maps.shape[:-2])


@torch.no_grad()
def gaussian_kl_scores_reference(maps: Tensor, sigma: float = 2.0, num_subjects: int = 1) -> Tensor:
    """The written-out ``KL(G || S)`` with G and log S at every pixel (the test oracle)."""
    if maps.dim() < 2:
        raise ValueError(f"maps must have shape [..., H, W], got {tuple(maps.shape)}")
    height, width = maps.shape[-2], maps.shape[-1]
    work = maps.detach().to(_working_dtype(maps.dtype))
    locations = subject_locations(work, num_subjects)
    target = subject_gaussian_maps(locations, height, width, sigma) + GAUSSIAN_EPSILON
    target = target.flatten(-2)
    target = target / target.sum(dim=-1, keepdim=True)
    log_s = F.log_softmax(work.flatten(-2), dim=-1)
    return (target * (target.log() - log_s)).sum(dim=-1)


@torch.no_grad()
def rank_gaussian_candidates(
    maps: Tensor, num_candidates: int = 25, sigma: float = 2.0, num_subjects: int = 1
) -> Tensor:
    """Indices [B, num_candidates] of the tokens whose maps [B, T, H, W] are most Gaussian.

    Best (lowest KL to the mean of ``num_subjects`` Gaussians at the map's maxima) first;
    equal scores keep ascending token order (stable sort), so the result is deterministic.
    ``num_candidates`` is clamped to T.
    """
    if maps.dim() != 4:
        raise ValueError(f"maps must have shape [B, T, H, W], got {tuple(maps.shape)}")
    if num_candidates < 0:
        raise ValueError(f"num_candidates must be >= 0, got {num_candidates}")
    scores = gaussian_kl_scores(maps, sigma, num_subjects=num_subjects)
    order = torch.sort(scores, dim=-1, stable=True).indices
    return order[:, : min(num_candidates, maps.shape[1])]


@torch.no_grad()
def entropy_scores(maps: Tensor) -> Tensor:
    """Entropy (nats) of each map's spatial softmax: scores [...] for maps [..., H, W]."""
    log_p = F.log_softmax(maps.detach().to(_working_dtype(maps.dtype)).flatten(-2), dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


@torch.no_grad()
def rank_entropy_candidates(maps: Tensor, num_candidates: int = 25) -> Tensor:
    """Indices [B, num_candidates] of the tokens whose maps [B, T, H, W] have the lowest entropy.

    Lowest first; ties keep ascending token order.
    """
    if maps.dim() != 4:
        raise ValueError(f"maps must have shape [B, T, H, W], got {tuple(maps.shape)}")
    order = torch.sort(entropy_scores(maps), dim=-1, stable=True).indices
    return order[:, : min(num_candidates, maps.shape[1])]


def rank_candidates(
    maps: Tensor,
    num_candidates: int,
    sigma: float = 2.0,
    strategy: str = "gaussian",
    num_subjects: int = 1,
) -> Tensor:
    """Candidates [B, num_candidates] of maps [B, T, H, W] by the reference's top_k_strategy.

    ``num_subjects`` shapes the Gaussian ranking's target only, as in the reference.
    """
    if strategy == "gaussian":
        return rank_gaussian_candidates(maps, num_candidates, sigma, num_subjects)
    if strategy == "entropy":
        return rank_entropy_candidates(maps, num_candidates)
    if strategy == "consistent":
        count = min(num_candidates, maps.shape[1])
        return torch.arange(count, device=maps.device).expand(maps.shape[0], count)
    raise ValueError(f"top_k_strategy must be one of {TOP_K_STRATEGIES}, got {strategy!r}")
