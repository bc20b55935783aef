"""Test-time augmentation and keypoint read-out on maps whose answer is known by construction."""

from __future__ import annotations

import torch

from skp_core.gaussian import argmax_locations, gaussian_maps
from skp_core.readout import peak_scores, read_keypoints, subpixel_locations
from skp_core.view_averaging import average_views, view_transforms, warp_views


def test_argmax_readout_is_pixel_centre_and_score_is_peak():
    maps = torch.zeros(1, 2, 4, 8)
    maps[0, 0, 1, 6] = 0.7  # row 1, col 6
    maps[0, 1, 3, 0] = 0.2
    xy, score = read_keypoints(maps, "argmax")
    torch.testing.assert_close(xy[0, 0], torch.tensor([6.5 / 8, 1.5 / 4]))
    torch.testing.assert_close(xy[0, 1], torch.tensor([0.5 / 8, 3.5 / 4]))
    torch.testing.assert_close(score, torch.tensor([[0.7, 0.2]]))


def test_subpixel_readout_finds_peak_between_pixels():
    maps = torch.zeros(1, 1, 9, 9)
    maps[0, 0, 4, 4] = 1.0
    maps[0, 0, 4, 5] = 1.0  # two equal pixels: the true peak is on their shared edge
    xy = subpixel_locations(maps)
    # The refinement moves towards the equal neighbour, at most half a pixel.
    torch.testing.assert_close(xy[0, 0], torch.tensor([5.0 / 9, 4.5 / 9]))


def test_subpixel_readout_keeps_pixel_centre_at_the_border():
    maps = torch.zeros(1, 1, 5, 5)
    maps[0, 0, 0, 0] = 1.0
    maps[0, 0, 0, 1] = 0.5
    xy = subpixel_locations(maps)
    torch.testing.assert_close(xy[0, 0], torch.tensor([0.5 / 5, 0.5 / 5]))


def test_subpixel_of_gaussian_recovers_off_grid_centre():
    size = 64
    true = torch.tensor([[[0.3712, 0.6123]]])
    maps = gaussian_maps(true, size, size, sigma=2.0)
    err = (subpixel_locations(maps) - true).abs().max() * size
    assert (
        err < 1e-3
    )  # log-parabola is exact for a Gaussian, where argmax is off by up to half a pixel
    assert (argmax_locations(maps) - true).abs().max() * size > 0.2


def test_identity_view_and_seeded_views():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = view_transforms(2, 5, g1, include_identity=True)
    b = view_transforms(2, 5, g2, include_identity=True)
    assert a.shape == (2, 5, 2, 3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a[:, 0], torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3))
    assert not torch.allclose(a[:, 1], a[:, 2])


def test_average_views_undoes_each_view_warp():
    size = 64
    centres = torch.tensor([[[0.45, 0.5], [0.6, 0.4]], [[0.52, 0.55], [0.4, 0.62]]])
    base = gaussian_maps(centres, size, size, sigma=3.0)  # [B=2, K=2, H, W]
    thetas = view_transforms(2, 6, torch.Generator().manual_seed(0), include_identity=True)
    # What a perfectly equivariant model would produce for each warped view of the image.
    view_maps = warp_views(base, thetas)
    averaged = average_views(view_maps, thetas, size)
    assert averaged.shape == base.shape
    found = argmax_locations(averaged)
    assert (found - centres).abs().max() <= 1.0 / size
    core = slice(size // 4, 3 * size // 4)
    torch.testing.assert_close(averaged[..., core, core], base[..., core, core], atol=0.03, rtol=0)


def test_average_views_upsamples_and_has_no_nan_where_no_view_sees():
    thetas = torch.tensor([[[[0.5, 0.0, 0.9], [0.0, 0.5, 0.9]]]])  # a view of one corner only
    view_maps = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = average_views(view_maps, thetas, 32)
    assert out.shape == (1, 3, 32, 32)
    assert torch.isfinite(out).all()
    assert (out[..., :4, :4] == 0).all()  # the opposite corner was never seen: 0, not NaN


def test_warp_views_is_image_major():
    images = torch.stack([torch.zeros(3, 8, 8), torch.ones(3, 8, 8)])
    thetas = view_transforms(2, 3, torch.Generator().manual_seed(0), include_identity=True)
    views = warp_views(images, thetas)
    assert views.shape == (6, 3, 8, 8)
    assert views[:3].abs().sum() == 0 and views[3].min() == 1.0
    assert peak_scores(views[3:]).min() == 1.0
