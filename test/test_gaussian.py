"""Tests for skp_core.gaussian: argmax pixel centres and Gaussian values."""

from __future__ import annotations

import math

import torch

from skp_core.gaussian import argmax_locations, gaussian_maps


def test_argmax_location_of_one_hot() -> None:
    maps = torch.zeros(4, 8)
    maps[2, 5] = 1.0
    # ((5 + 0.5) / 8, (2 + 0.5) / 4)
    torch.testing.assert_close(argmax_locations(maps), torch.tensor([0.6875, 0.625]))


def test_argmax_location_batched_and_ties() -> None:
    maps = torch.zeros(2, 3, 4, 4)
    maps[0, 0, 1, 2] = 5.0
    maps[0, 1, 3, 0] = 5.0
    maps[1, 2, 0, 3] = 1.0
    maps[1, 2, 2, 1] = 1.0  # tie: row-major first (0, 3) wins
    out = argmax_locations(maps)
    assert out.shape == (2, 3, 2)
    torch.testing.assert_close(out[0, 0], torch.tensor([2.5 / 4, 1.5 / 4]))
    torch.testing.assert_close(out[0, 1], torch.tensor([0.5 / 4, 3.5 / 4]))
    torch.testing.assert_close(out[0, 2], torch.tensor([0.5 / 4, 0.5 / 4]))  # all zero: pixel 0
    torch.testing.assert_close(out[1, 2], torch.tensor([3.5 / 4, 0.5 / 4]))


def test_gaussian_values_at_pixel_centres() -> None:
    loc = torch.tensor([3.5 / 8, 2.5 / 6])  # pixel (row 2, col 3) of a 6x8 grid
    g = gaussian_maps(loc, 6, 8, sigma=2.0)
    assert g.shape == (6, 8)
    assert float(g[2, 3]) == 1.0
    assert float(g.max()) == 1.0
    torch.testing.assert_close(g[2, 4], torch.tensor(math.exp(-1.0 / 8.0)))
    torch.testing.assert_close(g[3, 3], torch.tensor(math.exp(-1.0 / 8.0)))
    torch.testing.assert_close(g[3, 4], torch.tensor(math.exp(-2.0 / 8.0)))
    torch.testing.assert_close(g[0, 0], torch.tensor(math.exp(-(4.0 + 9.0) / 8.0)))


def test_gaussian_between_pixels_and_batched() -> None:
    # x = 2/4 lies on the border between columns 1 and 2: both are half a pixel away.
    locs = torch.tensor([[[0.5, 0.5 / 4]], [[0.125, 0.125]]])  # [2, 1, 2]
    g = gaussian_maps(locs, 4, 4, sigma=1.0)
    assert g.shape == (2, 1, 4, 4)
    torch.testing.assert_close(g[0, 0, 0, 1], torch.tensor(math.exp(-0.125)))
    torch.testing.assert_close(g[0, 0, 0, 2], torch.tensor(math.exp(-0.125)))
    torch.testing.assert_close(g[1, 0, 0, 0], torch.tensor(1.0))
    torch.testing.assert_close(g[1, 0, 1, 0], torch.tensor(math.exp(-0.5)))


def test_gaussian_argmax_round_trip() -> None:
    maps = torch.zeros(3, 5, 7)
    maps[0, 4, 6] = 1.0
    maps[1, 0, 0] = 1.0
    maps[2, 2, 3] = 1.0
    locs = argmax_locations(maps)
    g = gaussian_maps(locs, 5, 7, sigma=1.5)
    torch.testing.assert_close(argmax_locations(g), locs)
    torch.testing.assert_close(g.flatten(1).max(dim=1).values, torch.ones(3))
