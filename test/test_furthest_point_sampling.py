"""Tests for skp_core.furthest_point_sampling on hand-placed points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skp_core.furthest_point_sampling import furthest_point_sampling, select_keypoint_tokens

# Entry 0: centre + square corners. Diagonals (1, 4) and (2, 3) tie; (1, 4) is first in
# row-major order. Then 2 and 3 are both at distance 1 (2 wins: lower index), then 3, then 0.
SQUARE = [[0.5, 0.5], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
# Entry 1: points on a line. Pair (0, 2); then 3 (0.5 away), 4 (0.25), 1 (0.1).
LINE = [[0.0, 0.0], [0.1, 0.0], [1.0, 0.0], [0.5, 0.0], [0.75, 0.0]]


def _points() -> torch.Tensor:
    return torch.tensor([SQUARE, LINE])


def test_fps_order_batched() -> None:
    assert furthest_point_sampling(_points(), 5).tolist() == [[1, 4, 2, 3, 0], [0, 2, 3, 4, 1]]
    assert furthest_point_sampling(_points(), 3).tolist() == [[1, 4, 2], [0, 2, 3]]
    assert furthest_point_sampling(_points(), 2).tolist() == [[1, 4], [0, 2]]


def test_fps_small_k_and_errors() -> None:
    # k == 1: the first point of the farthest pair; k == 0: nothing.
    assert furthest_point_sampling(_points(), 1).tolist() == [[1], [0]]
    assert furthest_point_sampling(_points(), 0).shape == (2, 0)
    with pytest.raises(ValueError):
        furthest_point_sampling(_points(), 6)
    with pytest.raises(ValueError):
        furthest_point_sampling(_points()[0], 2)


def test_fps_pair_prefers_lower_index_first() -> None:
    # The farthest pair is (1, 3) in either order; the lower index comes first.
    points = torch.tensor([[[0.5, 0.5], [1.0, 1.0], [0.6, 0.5], [0.0, 0.0]]])
    assert furthest_point_sampling(points, 2).tolist() == [[1, 3]]


def test_fps_duplicates_give_distinct_indices() -> None:
    points = torch.full((1, 4, 2), 0.3)
    assert furthest_point_sampling(points, 4).tolist() == [[0, 1, 2, 3]]


def _peak_maps(peaks: list[tuple[int, int]], size: int = 16, sigma: float = 2.0) -> torch.Tensor:
    """One peak-1 Gaussian per token at (row, col), or a flat map for (-1, -1)."""
    i = np.arange(size, dtype=np.float64)[:, None]
    j = np.arange(size, dtype=np.float64)[None, :]
    maps = []
    for row, col in peaks:
        if row < 0:
            maps.append(np.zeros((size, size)))
        else:
            g = np.exp(-((i - row) ** 2 + (j - col) ** 2) / (2.0 * sigma**2))
            maps.append(np.log(g + 1e-5))
    return torch.tensor(np.stack(maps), dtype=torch.float32)


def test_select_keypoint_tokens_uses_ranking_then_locations() -> None:
    # Ranking maps: tokens 0-3 peaked (candidates), 4-5 flat (never candidates).
    ranking = _peak_maps([(4, 4), (5, 9), (10, 4), (11, 11), (-1, -1), (-1, -1)])
    # Location maps: among the candidates, tokens 0 and 1 are farthest apart; the flat
    # tokens 4 and 5 would be farther still if (wrongly) considered.
    locations = _peak_maps([(0, 0), (15, 15), (0, 1), (1, 0), (15, 0), (0, 15)])
    ranking_b = torch.stack([ranking, ranking])
    locations_b = torch.stack([locations, locations[[2, 3, 0, 1, 4, 5]]])
    picked = select_keypoint_tokens(ranking_b, locations_b, num_candidates=4, top_k=2)
    assert sorted(picked[0].tolist()) == [0, 1]
    assert sorted(picked[1].tolist()) == [2, 3]
    # Same maps for both: the two candidates farthest apart in the ranking maps are 0 and 3
    # (distance sqrt(49 + 49) vs sqrt(36) for 0-2 and sqrt(36 + 4) for 1-3).
    same = select_keypoint_tokens(ranking[None], ranking[None], num_candidates=4, top_k=2)
    assert sorted(same[0].tolist()) == [0, 3]
    with pytest.raises(ValueError):
        select_keypoint_tokens(ranking[None], ranking[None], num_candidates=4, top_k=5)
