"""Inference with test-time augmentation on the tiny model and real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from photos import photo

from skp_core.backbone import load_backbone
from skp_core.bundle import Bundle, BundleError, save_bundle
from skp_core.config import default_config
from skp_core.detector import KeypointDetector, normalized_to_pixels, to_image_tensor

METHOD = default_config("tiny").with_overrides(
    image_size=64, feature_resolution=16, num_tokens=24, top_k=5, num_views=3
)


def tiny_bundle(backbone, regressor: bool = False) -> Bundle:
    gen = torch.Generator().manual_seed(0)
    context = torch.randn(METHOD.num_tokens, backbone.context_dim, generator=gen)
    landmarks = ["a", "b"] if regressor else None
    return Bundle(
        context=context,
        selected_indices=torch.arange(METHOD.top_k),
        regressor=torch.randn(2 * METHOD.top_k, 4, generator=gen) * 0.1 if regressor else None,
        landmark_names=landmarks,
        backbone={"model": "tiny", "fingerprint": backbone.fingerprint},
        method=METHOD.to_dict(),
    )


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("tiny")


@pytest.fixture(scope="module")
def detector(backbone):
    det = KeypointDetector(backbone, tiny_bundle(backbone, regressor=True))
    yield det
    det.close()


def test_keypoints_inside_image_for_any_size(detector):
    for name in ("astronaut", "chelsea", "rocket"):
        image = photo(name)
        (det,) = detector.detect(image)
        h, w = image.shape[:2]
        assert det.pixels.shape == (5, 2) and det.scores.shape == (5,)
        assert (det.pixels[:, 0] >= -0.5).all() and (det.pixels[:, 0] <= w - 0.5).all()
        assert (det.pixels[:, 1] >= -0.5).all() and (det.pixels[:, 1] <= h - 0.5).all()
        assert ((det.scores > 0) & (det.scores <= 1)).all()
        assert det.landmarks_pixels.shape == (2, 2)


def test_same_image_same_keypoints_and_batch_independence(detector):
    a, b = photo("astronaut"), photo("coffee")
    alone_a = detector.detect(a)[0]
    alone_b = detector.detect(b)[0]
    together = detector.detect([a, b])
    np.testing.assert_allclose(together[0].normalized, alone_a.normalized, atol=1e-6)
    np.testing.assert_allclose(together[1].normalized, alone_b.normalized, atol=1e-6)
    np.testing.assert_allclose(together[0].scores, alone_a.scores, rtol=1e-4)
    again = detector.detect(a)[0]
    np.testing.assert_array_equal(again.normalized, alone_a.normalized)


def test_non_square_image_maps_back_to_its_pixels(detector):
    # The method sees every image squashed to a square, so stretching the input horizontally
    # must stretch only the x pixel coordinates.
    import cv2

    image = photo("astronaut")[:, :, :]
    wide = cv2.resize(image, (1024, 512), interpolation=cv2.INTER_AREA)
    narrow = cv2.resize(image, (512, 512), interpolation=cv2.INTER_AREA)
    d_wide = detector.detect(wide)[0]
    d_narrow = detector.detect(narrow)[0]
    np.testing.assert_allclose(d_wide.normalized, d_narrow.normalized, atol=1.5 / 64)
    expected = normalized_to_pixels(d_wide.normalized, 512, 1024)
    np.testing.assert_allclose(d_wide.pixels, expected)


def test_pixel_convention():
    pts = np.array([[0.5 / 4, 0.5 / 2], [3.5 / 4, 1.5 / 2]])
    np.testing.assert_allclose(normalized_to_pixels(pts, 2, 4), [[0, 0], [3, 1]])


def test_return_maps_and_subpixel():
    backbone = load_backbone("tiny")  # one detector per UNet: this one needs its own
    det = KeypointDetector(backbone, tiny_bundle(backbone), readout="subpixel", num_views=2)
    try:
        (d,) = det.detect(photo("cat"), return_maps=True)
        assert d.maps.shape == (5, 64, 64)
        assert d.landmarks_pixels is None
        peak = d.maps.reshape(5, -1).argmax(1)
        argmax_xy = np.stack(((peak % 64 + 0.5) / 64, (peak // 64 + 0.5) / 64), 1)
        assert np.abs(d.normalized - argmax_xy).max() <= 0.5 / 64 + 1e-9
    finally:
        det.close()


def test_bundle_for_another_backbone_is_refused(backbone, tmp_path):
    bundle = tiny_bundle(backbone)
    bundle.context = torch.randn(METHOD.num_tokens, 768)
    bundle.backbone = {"model": "sd-legacy/stable-diffusion-v1-5", "fingerprint": {}}
    with pytest.raises(BundleError, match="768"):
        KeypointDetector(backbone, bundle)
    save_bundle(tiny_bundle(backbone), tmp_path / "b")
    det = KeypointDetector.from_bundle(tmp_path / "b")
    assert det.num_keypoints == 5
    det.close()


def test_bad_images_are_rejected_clearly(detector):
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        detector.detect(np.zeros((8, 8, 5), np.uint8))


def test_latent_view_space_is_close_but_not_the_exact_path():
    backbone = load_backbone("tiny")  # its own: the module's detector holds the shared one
    bundle = tiny_bundle(backbone)
    images = [photo("astronaut"), photo("coffee")]
    found = {}
    for space in ("image", "latent"):
        det = KeypointDetector(backbone, bundle, view_space=space)
        try:
            assert det.view_space == space
            found[space] = det.detect(images, return_maps=True)
        finally:
            det.close()
    for exact, latent in zip(found["image"], found["latent"], strict=True):
        assert latent.maps.shape == exact.maps.shape and not np.allclose(latent.maps, exact.maps)
        assert np.all((latent.normalized >= 0) & (latent.normalized <= 1))
    with pytest.raises(ValueError, match="view_space must be one of"):
        KeypointDetector(backbone, bundle, view_space="pixels")


def test_method_the_backbone_cannot_run_is_refused_before_any_work():
    backbone = load_backbone("tiny")  # the module's detector holds the shared one
    bundle = tiny_bundle(backbone)
    bundle.method = {**bundle.method, "layers": ["up_blocks.9.attentions.0"]}
    with pytest.raises(BundleError, match=r"method\.layers: no attention layer 'up_blocks\.9"):
        KeypointDetector(backbone, bundle)
    bundle.method["layers"] = ["down_blocks.0.attentions.0.transformer_blocks.0.attn1"]
    with pytest.raises(BundleError, match="is not a cross-attention layer"):
        KeypointDetector(backbone, bundle)
    with pytest.raises(ValueError, match="num_views must be between 1 and 256, got 100000"):
        KeypointDetector(backbone, tiny_bundle(backbone), num_views=100_000)
    # Nothing was left installed on the UNet by the refused detectors.
    KeypointDetector(backbone, tiny_bundle(backbone)).close()


def test_degenerate_maps_are_flagged_not_read():
    """A saturating context (far beyond what training makes) gives maps without a peak."""
    backbone = load_backbone("tiny")
    good = KeypointDetector(backbone, tiny_bundle(backbone))
    try:
        (det,) = good.detect(photo("chelsea"))
    finally:
        good.close()
    assert det.degenerate.shape == (METHOD.top_k,) and not det.degenerate.any()
    saturated = tiny_bundle(backbone)
    saturated.context = saturated.context * 1e30
    bad = KeypointDetector(backbone, saturated)
    try:
        (det,) = bad.detect(photo("chelsea"))
    finally:
        bad.close()
    assert det.degenerate.all()


def test_degenerate_maps_on_hand_made_maps():
    from skp_core.readout import degenerate_maps

    peaked = torch.full((3, 5), 0.01)
    peaked[1, 2] = 0.2
    nearly_flat = torch.full((3, 5), 0.5)
    nearly_flat[0, 0] += 1e-4  # a real (small) peak still counts
    maps = torch.stack(
        [
            peaked,
            torch.zeros(3, 5),
            torch.full((3, 5), 0.3),
            torch.where(peaked > 0.1, torch.nan, peaked),
            nearly_flat,
        ]
    )
    assert degenerate_maps(maps).tolist() == [False, True, True, True, False]
    assert degenerate_maps(maps[None]).shape == (1, 5)


def test_bundle_read_out_is_honoured_and_the_default_unchanged():
    backbone = load_backbone("tiny")
    image = photo("astronaut")
    old = tiny_bundle(backbone)
    old.method = {k: v for k, v in old.method.items() if not k.startswith("max_loc")}
    default = KeypointDetector(backbone, old)  # a bundle from before the option existed
    try:
        assert default.readout == "argmax"
        maps = default.keypoint_maps(to_image_tensor(image)[None])
        (det,) = default.detect(image, return_maps=True)
    finally:
        default.close()
    from skp_core.gaussian import argmax_locations
    from skp_core.readout import weighted_average_locations

    assert np.array_equal(det.normalized, argmax_locations(maps)[0].double().numpy())
    for distance in (5.0, -1.0):
        bundle = tiny_bundle(backbone)
        bundle.method.update(max_loc_strategy="weighted_avg", max_loc_distance=distance)
        weighted = KeypointDetector(backbone, bundle)
        try:
            (got,) = weighted.detect(image)
        finally:
            weighted.close()
        scaled = distance * METHOD.image_size / 512 if distance >= 0 else -1
        expected = weighted_average_locations(maps, scaled)[0].double().numpy()
        assert np.allclose(got.normalized, expected, atol=1e-6)
        assert not np.array_equal(got.normalized, det.normalized)


@pytest.mark.parametrize("readout", ["argmax", "subpixel", "weighted_avg"])
def test_two_subjects_find_each_keypoint_once_per_copy_of_real_maps(detector, readout):
    # The view-averaged maps of a photo, next to a copy of themselves: each keypoint is read
    # twice, once per copy, at the same place relative to its copy.
    from skp_core.instances import read_instances
    from skp_core.readout import read_keypoints

    maps = torch.from_numpy(detector.detect(photo("chelsea"), return_maps=True)[0].maps)[None]
    size, gap = maps.shape[-1], 16  # a gap, so a 5-pixel weighted_avg never sees the other copy
    doubled = torch.cat([maps, torch.zeros(*maps.shape[:-1], gap), maps], dim=-1)
    width = doubled.shape[-1]
    # weighted_avg's distance is in pixels of a 512-pixel map, scaled by the larger side.
    alone, _ = read_keypoints(maps, readout, distance=5 * 512 / size)
    locations, scores = read_instances(doubled, 2, readout, distance=5 * 512 / width)
    left = alone * torch.tensor([size / width, 1.0])
    assert torch.allclose(locations[0, 0], left, atol=1e-5)
    right = left + torch.tensor([(size + gap) / width, 0.0])
    assert torch.allclose(locations[0, 1], right, atol=1e-5)
    assert torch.equal(scores[0, 0], scores[0, 1])


def test_two_subjects_give_two_instances_numbered_left_to_right():
    backbone = load_backbone("tiny")  # its own: the module's detector holds the shared one
    doubled = np.concatenate([photo("chelsea")[:, :300]] * 2, axis=1)
    bundle = tiny_bundle(backbone, regressor=True)
    detector = KeypointDetector(backbone, bundle, num_subjects=2)
    try:
        found = detector.detect(doubled)[0]
    finally:
        detector.close()
    assert len(found.instances) == 2
    first, second = found.instances
    assert np.array_equal(found.pixels, first.pixels) and np.array_equal(found.scores, first.scores)
    assert first.pixels[:, 0].mean() <= second.pixels[:, 0].mean()
    assert not np.array_equal(first.pixels, second.pixels)
    assert second.landmarks_pixels is not None and second.landmarks_pixels.shape == (2, 2)
    # One subject: one instance holding the top-level keypoints, as before.
    single = KeypointDetector(backbone, bundle)
    try:
        alone = single.detect(doubled)[0]
    finally:
        single.close()
    assert len(alone.instances) == 1 and np.array_equal(alone.instances[0].pixels, alone.pixels)
