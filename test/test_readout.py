"""Read-outs of view-averaged maps: the reference's weighted average, by hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from skp_core.readout import read_keypoints, weighted_average_locations


def _map() -> torch.Tensor:
    """6 x 9 (non-square): peak 1.0 at row 2 col 3, 0.5 beside it, 0.9 far away at (5, 8)."""
    heat = torch.zeros(6, 9, dtype=torch.float64)
    heat[2, 3], heat[2, 4], heat[5, 8] = 1.0, 0.5, 0.9  # (5, 8) is sqrt(34) = 5.83 px away
    return heat


def test_weighted_average_near_the_argmax() -> None:
    heat = _map()
    before = heat.clone()
    xy = weighted_average_locations(heat[None, None], distance=5.0)[0, 0]
    total = 1.5 + 1e-6
    x, y = (3 * 1.0 + 4 * 0.5) / total, (2 * 1.5) / total
    assert xy.tolist() == pytest.approx([(x + 0.5) / 9, (y + 0.5) / 6], abs=1e-12)
    assert torch.equal(heat, before)  # unlike the reference, the input is left as it was


def test_weighted_average_of_the_whole_map() -> None:
    xy = weighted_average_locations(_map(), distance=-1)
    total = 2.4 + 1e-6
    x = (3 * 1.0 + 4 * 0.5 + 8 * 0.9) / total
    y = (2 * 1.5 + 5 * 0.9) / total
    assert xy.tolist() == pytest.approx([(x + 0.5) / 9, (y + 0.5) / 6], abs=1e-12)


def test_distance_is_in_pixels_of_a_512_map() -> None:
    """5 px at 512 is 1.25 px at 128: a neighbour 2 px away counts only on the larger map."""
    for size, expected_x in ((512, (10 * 1.0 + 12 * 0.5) / 1.5), (128, 10.0)):
        heat = torch.zeros(1, 1, size, size, dtype=torch.float64)
        heat[..., 7, 10], heat[..., 7, 12] = 1.0, 0.5
        xy, score = read_keypoints(heat, "weighted_avg", 5.0)
        assert xy[0, 0, 0].item() == pytest.approx((expected_x + 0.5) / size, abs=1e-6)
        assert score.item() == 1.0


def test_argmax_stays_the_default() -> None:
    heat = _map()[None]
    xy, _ = read_keypoints(heat)
    assert xy[0].tolist() == [3.5 / 9, 2.5 / 6]
