"""Tests for skp_core.candidates: KL(G || softmax) scores and the candidate ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from skp_core.candidates import (
    entropy_scores,
    gaussian_kl_scores,
    rank_candidates,
    rank_entropy_candidates,
    rank_gaussian_candidates,
)

SIZE = 16
SIGMA = 2.0
EPS = 1e-5


def _np_gaussian(row: int, col: int, sigma: float = SIGMA, size: int = SIZE) -> np.ndarray:
    """Peak-1 Gaussian on pixel indices; pixel centres are integer + 0.5 on both sides."""
    i = np.arange(size, dtype=np.float64)[:, None]
    j = np.arange(size, dtype=np.float64)[None, :]
    return np.exp(-((i - row) ** 2 + (j - col) ** 2) / (2.0 * sigma**2))


def _hand_maps() -> torch.Tensor:
    """Tokens: 0 flat, 1 double peak, 2 log of the exact target (KL ~ 0), 3 copy of token 0."""
    flat = np.zeros((SIZE, SIZE))
    double = np.log(_np_gaussian(3, 3) + _np_gaussian(12, 12) + EPS)
    single = np.log(_np_gaussian(8, 5) + EPS)
    return torch.tensor(np.stack([flat, double, single, flat]), dtype=torch.float32)[None]


def test_kl_of_a_two_by_two_map_by_hand() -> None:
    maps = torch.tensor([[[[math.log(2.0), 0.0], [0.0, 0.0]]]])
    # Argmax pixel (0, 0); sigma 1: neighbours at distance 1 get exp(-1/2), the diagonal exp(-1).
    raw = [1.0 + EPS, math.exp(-0.5) + EPS, math.exp(-0.5) + EPS, math.exp(-1.0) + EPS]
    g = [v / sum(raw) for v in raw]
    s = [2.0 / 5.0, 1.0 / 5.0, 1.0 / 5.0, 1.0 / 5.0]
    expected = sum(gi * (math.log(gi) - math.log(si)) for gi, si in zip(g, s, strict=True))
    score = gaussian_kl_scores(maps, sigma=1.0)
    assert score.shape == (1, 1)
    assert abs(float(score[0, 0]) - expected) < 1e-6


def test_kl_values_of_hand_made_maps() -> None:
    scores = gaussian_kl_scores(_hand_maps(), sigma=SIGMA)[0].double()
    # Flat map: S uniform, so KL = log(H W) + sum G log G with G at pixel (0, 0).
    g = _np_gaussian(0, 0) + EPS
    g = g / g.sum()
    flat_expected = math.log(SIZE * SIZE) + float((g * np.log(g)).sum())
    assert abs(float(scores[0]) - flat_expected) < 1e-4
    assert abs(float(scores[3]) - flat_expected) < 1e-4
    # Two peaks: S = (g_a + g_b + eps) / sum, G = (g_a + eps) / sum (argmax = first peak a).
    ga, gb = _np_gaussian(3, 3), _np_gaussian(12, 12)
    g = (ga + EPS) / (ga + EPS).sum()
    s = (ga + gb + EPS) / (ga + gb + EPS).sum()
    assert abs(float(scores[1]) - float((g * np.log(g / s)).sum())) < 1e-4
    # ... which is about log 2: S puts half its mass on G's peak.
    assert abs(float(scores[1]) - math.log(2.0)) < 1e-2
    # The map is log G itself: S == G, KL == 0.
    assert abs(float(scores[2])) < 1e-5


def test_ranking_order_ties_and_clamp() -> None:
    maps = _hand_maps()
    assert rank_gaussian_candidates(maps, num_candidates=3, sigma=SIGMA).tolist() == [[2, 1, 0]]
    # Clamped to T = 4; tokens 0 and 3 are identical and keep ascending token order.
    assert rank_gaussian_candidates(maps, num_candidates=25, sigma=SIGMA).tolist() == [[2, 1, 0, 3]]


def test_ranking_batched_and_shift_invariant() -> None:
    maps = _hand_maps()
    permuted = maps[:, [3, 2, 0, 1]] + torch.tensor([1.0, -4.0, 0.5, 7.0])[None, :, None, None]
    batch = torch.cat([maps, permuted]).requires_grad_(True)
    ranked = rank_gaussian_candidates(batch, num_candidates=4, sigma=SIGMA)
    assert ranked.dtype == torch.long
    # Softmax ignores per-map constants. Permuted entry: new tokens 0..3 are old 3, 2, 0, 1.
    assert ranked.tolist() == [[2, 1, 0, 3], [1, 3, 0, 2]]


def test_entropy_ranking_on_maps_with_known_entropies():
    """Spatial softmax of a 4 x 6 map: flat -> log 24; one value c above the rest -> known."""
    h, w = 4, 6
    flat = torch.zeros(h, w, dtype=torch.float64)
    peaked = torch.zeros(h, w, dtype=torch.float64)
    peaked[1, 4] = 3.0
    two = torch.zeros(h, w, dtype=torch.float64)
    two[0, 0] = two[3, 5] = 3.0
    maps = torch.stack([flat, peaked, two])[None]  # [1, 3, 4, 6]

    def expected(c: float, n_high: int) -> float:
        z = n_high * math.exp(c) + (h * w - n_high)
        p_high, p_low = math.exp(c) / z, 1 / z
        return -(n_high * p_high * math.log(p_high) + (h * w - n_high) * p_low * math.log(p_low))

    scores = entropy_scores(maps)[0]
    assert scores.tolist() == pytest.approx(
        [math.log(h * w), expected(3.0, 1), expected(3.0, 2)], abs=1e-12
    )
    # The softmax of raw map values (the reference's): two peaks at 3 concentrate more mass
    # than one (2.19 < 2.37 nats), so that map ranks first.
    assert rank_entropy_candidates(maps, 3).tolist() == [[2, 1, 0]]
    assert rank_candidates(maps, 2, strategy="entropy").tolist() == [[2, 1]]
    assert rank_candidates(maps.expand(2, -1, -1, -1), 2, strategy="consistent").tolist() == [
        [0, 1],
        [0, 1],
    ]
    assert torch.equal(
        rank_candidates(maps, 3, sigma=1.0), rank_gaussian_candidates(maps, 3, sigma=1.0)
    )
    with pytest.raises(ValueError, match="top_k_strategy must be one of"):
        rank_candidates(maps, 3, strategy="random")
