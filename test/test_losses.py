"""Tests for skp_core.losses with hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import torch

from skp_core.affine import identity_affine, sample_affine, warp
from skp_core.gaussian import gaussian_maps
from skp_core.losses import (
    EQUIVARIANCE_WEIGHT,
    LOCALIZATION_WEIGHT,
    equivariance_loss,
    keypoint_losses,
    localization_loss,
)

QUARTER_TURN = torch.tensor([[[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]])
# One pixel of a 4-wide grid to the left: out[i, j] = in[i, j + 1].
ONE_PIXEL = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])


def _corner_gaussian_4x4(sigma: float = 2.0) -> np.ndarray:
    """Peak-1 Gaussian at pixel (0, 0) of a 4x4 grid: exp(-(i^2 + j^2) / (2 sigma^2))."""
    i = np.arange(4, dtype=np.float64)
    return np.exp(-(i[:, None] ** 2 + i[None, :] ** 2) / (2.0 * sigma**2))


def test_weights_match_reference() -> None:
    assert EQUIVARIANCE_WEIGHT == 1000.0
    assert LOCALIZATION_WEIGHT == 100.0


def test_localization_zero_on_its_own_target() -> None:
    locs = torch.tensor([[[2.5 / 8, 5.5 / 8], [7.5 / 8, 0.5 / 8]]])
    maps = gaussian_maps(locs, 8, 8, sigma=2.0)
    assert float(localization_loss(maps, sigma=2.0)) == 0.0


def test_localization_of_zero_map_and_its_gradient() -> None:
    maps = torch.zeros(1, 1, 4, 4, requires_grad=True)
    loss = localization_loss(maps, sigma=2.0)
    # All-zero map: argmax is pixel (0, 0); G separates, so mean(G^2) = (sum_i e^{-i^2/4})^2 / 16.
    row_sum = 1.0 + math.exp(-0.25) + math.exp(-1.0) + math.exp(-2.25)
    assert abs(float(loss.detach()) - row_sum**2 / 16.0) < 1e-6
    loss.backward()
    # The target is detached: d/dmaps mean((maps - G)^2) = 2 (maps - G) / 16.
    expected_grad = torch.tensor(-2.0 * _corner_gaussian_4x4() / 16.0, dtype=torch.float32)
    torch.testing.assert_close(maps.grad[0, 0], expected_grad)


def test_localization_batch_mean_equals_per_image_mean() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 2, 8, 8, generator=generator)
    per_image = [localization_loss(maps[b : b + 1]) for b in range(3)]
    torch.testing.assert_close(localization_loss(maps), torch.stack(per_image).mean())


def test_equivariance_zero_for_exact_warp() -> None:
    generator = torch.Generator().manual_seed(1)
    maps = torch.rand(1, 3, 5, 5, generator=generator)
    transformed = warp(maps, QUARTER_TURN)  # a pure pixel permutation: exactly invertible
    assert float(equivariance_loss(maps, transformed, QUARTER_TURN)) < 1e-12
    assert float(equivariance_loss(maps, maps.clone(), identity_affine(1))) == 0.0


def test_equivariance_counts_out_of_view_zeros() -> None:
    ones = torch.ones(1, 1, 4, 4)
    # Undoing a one-pixel shift pulls column 0 from outside the view: 4 of 16 pixels are 0.
    assert abs(float(equivariance_loss(ones, ones, ONE_PIXEL)) - 0.25) < 1e-6
    # Identity transform, all-zero transformed maps: mean of 1^2.
    zeros = torch.zeros(1, 1, 4, 4)
    assert abs(float(equivariance_loss(ones, zeros, identity_affine(1))) - 1.0) < 1e-6


def test_equivariance_gradient_reaches_both_inputs() -> None:
    generator = torch.Generator().manual_seed(2)
    maps = torch.rand(2, 3, 16, 16, generator=generator, requires_grad=True)
    transformed = torch.rand(2, 3, 16, 16, generator=generator, requires_grad=True)
    theta = sample_affine(2, generator)
    equivariance_loss(maps, transformed, theta).backward()
    assert maps.grad is not None and float(maps.grad.abs().sum()) > 0.0
    assert transformed.grad is not None and float(transformed.grad.abs().sum()) > 0.0


def test_keypoint_losses_combines_hand_values() -> None:
    ones = torch.ones(1, 1, 4, 4)
    terms = keypoint_losses(ones, ones, ONE_PIXEL, sigma=2.0)
    localization = float(((1.0 - _corner_gaussian_4x4()) ** 2).mean())
    assert abs(float(terms.equivariance) - 0.25) < 1e-6
    assert abs(float(terms.localization) - localization) < 1e-6
    assert abs(float(terms.total) - (1000.0 * 0.25 + 100.0 * localization)) < 1e-3
    custom = keypoint_losses(
        ones, ones, ONE_PIXEL, equivariance_weight=1.0, localization_weight=0.0
    )
    assert abs(float(custom.total) - 0.25) < 1e-6
