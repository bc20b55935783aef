"""Tests for skp_core.affine: sampling ranges, exact warps, inverses and point transport."""

from __future__ import annotations

import math

import pytest
import torch

from skp_core.affine import (
    identity_affine,
    invert_affine,
    sample_affine,
    transform_points,
    warp,
)
from skp_core.gaussian import argmax_locations, gaussian_maps

# out(p) = in(theta p) with theta p = (y, -x): a clockwise quarter turn of the picture.
QUARTER_TURN = torch.tensor([[[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]])


def test_sample_affine_is_reproducible_and_in_range() -> None:
    first = sample_affine(64, torch.Generator().manual_seed(7))
    second = sample_affine(64, torch.Generator().manual_seed(7))
    other = sample_affine(64, torch.Generator().manual_seed(8))
    assert first.shape == (64, 2, 3) and first.dtype == torch.float32
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    a, b = first[:, 0, 0], first[:, 0, 1]
    # Structure [[s cos, s sin, tx], [-s sin, s cos, ty]].
    assert torch.equal(first[:, 1, 1], a)
    assert torch.equal(first[:, 1, 0], -b)
    scale = torch.sqrt(a * a + b * b)
    angle = torch.rad2deg(torch.atan2(b, a))
    assert bool((scale >= 0.8 - 1e-6).all()) and bool((scale <= 1.0 + 1e-6).all())
    assert bool((angle.abs() <= 15.0 + 1e-4).all())
    assert bool((first[:, :, 2].abs() <= 0.25).all())
    # 64 draws actually spread over the ranges (not stuck at one value).
    assert float(angle.max() - angle.min()) > 15.0
    assert float(scale.max() - scale.min()) > 0.1


def test_sample_affine_custom_ranges_and_dtype() -> None:
    theta = sample_affine(
        5,
        torch.Generator().manual_seed(0),
        rotation_deg=0.0,
        scale_range=(0.5, 0.5),
        translation=0.0,
        dtype=torch.float64,
    )
    assert theta.dtype == torch.float64
    expected = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(theta, expected.expand(5, 2, 3))


def test_identity_warp_returns_input() -> None:
    x = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).reshape(2, 3, 5, 4)
    out = warp(x, identity_affine(2))
    torch.testing.assert_close(out, x)


def test_quarter_turn_is_pixel_exact() -> None:
    image = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])[None, None]
    # out[i, j] = in[2 - j, i], written out by hand.
    expected = torch.tensor([[7.0, 4.0, 1.0], [8.0, 5.0, 2.0], [9.0, 6.0, 3.0]])[None, None]
    torch.testing.assert_close(warp(image, QUARTER_TURN), expected)
    # A single [2, 3] theta is broadcast over the batch, and shared by the channels.
    stacked = torch.cat([image, image * 10.0], dim=1).repeat(2, 1, 1, 1)
    out = warp(stacked, QUARTER_TURN[0])
    torch.testing.assert_close(out[:, 1], 10.0 * expected[:, 0].expand(2, 3, 3))


def test_one_pixel_translation() -> None:
    image = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])[None, None]
    # One pixel of a 4-wide grid is 2/4 = 0.5 in [-1, 1] units: out[i, j] = in[i, j + 1].
    theta = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])
    expected = torch.tensor([[2.0, 3.0, 4.0, 0.0], [6.0, 7.0, 8.0, 0.0]])[None, None]
    torch.testing.assert_close(warp(image, theta), expected)


def test_warp_rejects_mismatched_batch() -> None:
    with pytest.raises(ValueError):
        warp(torch.zeros(3, 1, 4, 4), identity_affine(2))


def _rotation_scale_translation(
    angle_deg: float, scale: float, tx: float, ty: float
) -> torch.Tensor:
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    return torch.tensor([[[c, s, tx], [-s, c, ty]]], dtype=torch.float64)


def test_invert_affine_is_an_inverse() -> None:
    theta = torch.cat(
        [
            _rotation_scale_translation(10.0, 0.9, 0.1, -0.2),
            _rotation_scale_translation(-14.0, 0.8, -0.25, 0.05),
        ]
    )
    inverse = invert_affine(theta)
    bottom = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(2, 1, 3)
    product = torch.cat([theta, bottom], 1) @ torch.cat([inverse, bottom], 1)
    torch.testing.assert_close(product, torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    torch.testing.assert_close(invert_affine(inverse), theta)
    # Pure quarter turn: inverse is the opposite quarter turn (transpose), known by hand.
    expected = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])
    torch.testing.assert_close(invert_affine(QUARTER_TURN), expected)


def test_warp_round_trip_recovers_centre() -> None:
    size = 64
    coords = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    smooth = torch.sin(2.0 * math.pi * xx) * torch.cos(math.pi * yy) + 0.5 * xx
    image = smooth[None, None]
    theta = _rotation_scale_translation(12.0, 0.85, 0.1, -0.05)
    back = warp(warp(image, theta), invert_affine(theta))
    centre = slice(size // 4, 3 * size // 4)
    torch.testing.assert_close(
        back[..., centre, centre], image[..., centre, centre], atol=5e-3, rtol=0
    )


def test_transform_points_quarter_turn_exact() -> None:
    # Input pixel (row r, col c) on a 3x3 grid goes to output (row c, col 2 - r).
    points = torch.tensor(
        [[[0.5 / 3, 2.5 / 3], [2.5 / 3, 1.5 / 3]]]
    )  # (x, y): (c=0,r=2), (c=2,r=1)
    expected = torch.tensor([[[0.5 / 3, 0.5 / 3], [1.5 / 3, 2.5 / 3]]])
    torch.testing.assert_close(transform_points(points, QUARTER_TURN), expected)


def test_transform_points_follows_a_warped_blob() -> None:
    size = 64
    generator = torch.Generator().manual_seed(3)
    theta = sample_affine(4, generator, dtype=torch.float64)
    # Blobs near the centre so they stay in view after any allowed transform.
    points = torch.tensor(
        [[[0.5, 0.5]], [[0.4, 0.6]], [[0.55, 0.45]], [[0.6, 0.62]]], dtype=torch.float64
    )
    blobs = gaussian_maps(points, size, size, sigma=3.0)  # [4, 1, H, W]
    found = argmax_locations(warp(blobs, theta))
    predicted = transform_points(points, theta)
    # The warped blob's argmax is its pixel centre: within one pixel of the true location.
    assert float((found - predicted).abs().max()) <= 1.0 / size
