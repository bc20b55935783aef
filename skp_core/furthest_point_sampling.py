"""Batched furthest point sampling and keypoint-token selection (METHOD §3 step 3, §4).

Same choices as upstream's Python loops (farthest pair first, then greedy max-min distance,
first index on ties) but on whole batches with no device-to-host sync: only the k picks loop.
"""

from __future__ import annotations

import torch
from torch import Tensor

from skp_core.candidates import rank_candidates
from skp_core.gaussian import argmax_locations

__all__ = ["furthest_point_sampling", "select_keypoint_tokens", "spread_candidates"]


def furthest_point_sampling(points: Tensor, k: int) -> Tensor:
    """Pick ``k`` well-spread points among ``points`` [B, N, 2]; returns indices [B, k].

    Order: the farthest pair first (lower index first; on equal distances the first pair in
    row-major order of the distance matrix), then repeatedly the point whose minimum distance
    to the chosen set is largest (lowest index on ties). ``k == 1`` returns the first point of
    the farthest pair (upstream cannot return fewer than two); ``k == 0`` an empty tensor.
    Chosen points are never picked again, so indices are distinct even for duplicate points.
    Squared Euclidean distances are compared (same order as distances).
    """
    if points.dim() != 3:
        raise ValueError(f"points must have shape [B, N, 2], got {tuple(points.shape)}")
    batch, n = points.shape[0], points.shape[1]
    if k < 0 or k > n:
        raise ValueError(f"k must be in [0, N={n}], got {k}")
    device = points.device
    if k == 0:
        return torch.empty((batch, 0), dtype=torch.long, device=device)
    points = points.detach()
    dist = (points.unsqueeze(2) - points.unsqueeze(1)).square().sum(dim=-1)  # [B, N, N]
    # Distances are >= 0, so -1 marks "never pick" (diagonal, already chosen points).
    off_diagonal = dist.masked_fill(torch.eye(n, dtype=torch.bool, device=device), -1.0)
    pair = off_diagonal.flatten(1).argmax(dim=1)
    first = torch.div(pair, n, rounding_mode="floor")
    second = pair - first * n
    if k == 1:
        return first.unsqueeze(1)
    batch_index = torch.arange(batch, device=device)
    chosen = [first, second]
    taken = torch.zeros((batch, n), dtype=torch.bool, device=device)
    taken[batch_index, first] = True
    taken[batch_index, second] = True
    min_dist = torch.minimum(dist[batch_index, first], dist[batch_index, second])
    for _ in range(k - 2):
        nxt = min_dist.masked_fill(taken, -1.0).argmax(dim=1)
        chosen.append(nxt)
        taken[batch_index, nxt] = True
        min_dist = torch.minimum(min_dist, dist[batch_index, nxt])
    return torch.stack(chosen, dim=1)


@torch.no_grad()
def spread_candidates(candidates: Tensor, candidate_maps: Tensor, top_k: int) -> Tensor:
    """Positions [B, top_k] within ``candidates`` [B, C] picked by FPS on their maps' argmax.

    ``candidate_maps`` [B, C, H, W] are the maps whose argmax locations are spread, row c being
    the map of token ``candidates[:, c]``; ``candidates.gather(1, positions)`` are the tokens.
    Raises ValueError when top_k exceeds the number of candidates.
    """
    if candidate_maps.shape[:2] != candidates.shape:
        raise ValueError(
            f"candidate maps {tuple(candidate_maps.shape[:2])} do not match candidates "
            f"{tuple(candidates.shape)}"
        )
    return furthest_point_sampling(argmax_locations(candidate_maps), top_k)


@torch.no_grad()
def select_keypoint_tokens(
    maps_for_ranking: Tensor,
    maps_for_locations: Tensor,
    num_candidates: int = 25,
    top_k: int = 10,
    sigma: float = 2.0,
    strategy: str = "gaussian",
    num_subjects: int = 1,
) -> Tensor:
    """Token indices [B, top_k]: candidates of one map stack, spread by FPS on another.

    Candidates are ranked by ``strategy`` (the reference's top_k_strategy, default gaussian,
    whose target has one Gaussian per subject); FPS uses each map's single argmax, as the
    reference does whatever ``num_subjects``.

    Candidates are ranked on ``maps_for_ranking`` [B, T, H, W]; FPS runs on the argmax
    locations (normalized x, y) of ``maps_for_locations`` [B, T, H', W'] at those tokens.
    Training passes A and A' (METHOD §3); token selection after optimization passes the same
    maps twice (§4). Raises ValueError when top_k exceeds the number of candidates.
    """
    if maps_for_ranking.dim() != 4 or maps_for_locations.dim() != 4:
        raise ValueError(
            "maps must have shape [B, T, H, W], got "
            f"{list(maps_for_ranking.shape)} and {list(maps_for_locations.shape)}"
        )
    if maps_for_ranking.shape[:2] != maps_for_locations.shape[:2]:
        raise ValueError(
            f"batch/token axes differ: {tuple(maps_for_ranking.shape[:2])} "
            f"vs {tuple(maps_for_locations.shape[:2])}"
        )
    candidates = rank_candidates(maps_for_ranking, num_candidates, sigma, strategy, num_subjects)
    candidates = candidates.to(maps_for_locations.device)
    batch_index = torch.arange(candidates.shape[0], device=candidates.device).unsqueeze(1)
    picked = spread_candidates(candidates, maps_for_locations[batch_index, candidates], top_k)
    return candidates.gather(1, picked)
