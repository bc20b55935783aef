"""The ROS-free debug drawing: keypoint colours land on the keypoint pixels, heat maps blend."""

from __future__ import annotations

import numpy as np
import pytest

from skp_core.overlay import blend_heatmap, combine_maps, draw_keypoints, render_overlay

COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200)]


def _gray(height: int = 120, width: int = 160) -> np.ndarray:
    return np.full((height, width, 3), 90, dtype=np.uint8)


@pytest.mark.parametrize("marker", ["circle", "square"])
def test_keypoint_colour_at_keypoint_pixel(marker):
    image = _gray()
    uv = np.array([[20.0, 30.0], [80.4, 60.6], [140.0, 100.0]])
    out = draw_keypoints(image, uv, COLORS, ["0", "1", "2"], marker=marker)
    assert out.shape == image.shape and out.dtype == np.uint8
    for (u, v), color in zip(uv, COLORS, strict=True):
        assert tuple(out[round(v), round(u)]) == color
    assert np.array_equal(image, _gray()), "the input must not be drawn on"


def test_markers_are_drawn_over_labels():
    # Keypoint 1 sits where keypoint 0's label is written: its centre still shows its colour.
    uv = np.array([[20.0, 40.0], [32.0, 30.0]])
    out = draw_keypoints(_gray(), uv, COLORS[:2], ["000", "111"], radius=3)
    assert tuple(out[30, 32]) == COLORS[1]


def test_non_finite_keypoints_are_skipped_and_sizes_checked():
    uv = np.array([[np.nan, 5.0], [50.0, 50.0]])
    out = draw_keypoints(_gray(), uv, COLORS[:2])
    assert tuple(out[50, 50]) == COLORS[1]
    with pytest.raises(ValueError, match="colours"):
        draw_keypoints(_gray(), uv, COLORS[:1])
    with pytest.raises(ValueError, match="RGB uint8"):
        draw_keypoints(np.zeros((10, 10), np.uint8), uv, COLORS)


def test_keypoints_outside_the_image_do_not_fail():
    out = draw_keypoints(_gray(), np.array([[-50.0, -50.0], [1e6, 3.0]]), COLORS[:2], ["a", "b"])
    assert out.shape == (120, 160, 3)


def test_combine_maps_is_a_normalized_maximum():
    maps = np.zeros((2, 8, 8), np.float32)
    maps[0, 1, 1], maps[1, 6, 6], maps[1, 1, 1] = 0.5, 0.25, 0.1
    heat = combine_maps(maps)
    assert heat.shape == (8, 8) and heat.dtype == np.float32
    assert heat[1, 1] == 1.0 and heat[6, 6] == 0.5 and heat.min() == 0.0
    assert np.array_equal(combine_maps(np.zeros((3, 4, 4))), np.zeros((4, 4)))


def test_heatmap_blend_shape_dtype_and_locality():
    image = _gray(60, 90)
    heat = np.zeros((16, 16), np.float32)
    heat[8, 8] = 1.0
    out = blend_heatmap(image, heat, alpha=0.7)
    assert out.shape == image.shape and out.dtype == np.uint8
    # Cold regions keep the camera image; the hot spot (centre) is tinted.
    assert np.array_equal(out[0, 0], image[0, 0])
    assert not np.array_equal(out[30, 45], image[30, 45])
    assert np.array_equal(blend_heatmap(image, heat, alpha=0.0), image)
    with pytest.raises(ValueError):
        blend_heatmap(image, heat, alpha=1.5)


def test_render_overlay_with_maps_and_landmarks():
    image = _gray()
    uv = np.array([[40.0, 40.0], [120.0, 80.0]])
    maps = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    out = render_overlay(
        image,
        uv,
        COLORS[:2],
        ["0", "1"],
        maps=maps,
        landmarks_uv=np.array([[80.0, 20.0]]),
        landmark_labels=["L0"],
    )
    assert out.shape == image.shape and out.dtype == np.uint8
    assert tuple(out[40, 40]) == COLORS[0] and tuple(out[80, 120]) == COLORS[1]
    assert tuple(out[20, 80]) == (255, 255, 255)  # landmark square
    plain = render_overlay(image, uv, COLORS[:2])
    assert not np.array_equal(out, plain)
