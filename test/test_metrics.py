"""Tests for skp_core.metrics on tiny hand-computed cases (3-4-5 triangles, exact pixels)."""

import math

import numpy as np
import pytest

from skp_core.metrics import (
    DATASET_PROTOCOLS,
    METRICS,
    evaluate,
    inter_eye_distance,
    mean_average_error,
    orientation_invariant,
    pck,
    visible,
)
from skp_core.regression import H36M_SWAP_PERMUTATION, swap_left_right

# Offsets of 0.006 in x and 0.008 in y: an L2 error of exactly 0.01 (a 3-4-5 triangle).
OFFSET = np.array([0.006, 0.008])


def _face() -> np.ndarray:
    """One face, 5 landmarks, eyes 0.2 apart horizontally."""
    return np.array([[[0.4, 0.4], [0.6, 0.4], [0.5, 0.5], [0.42, 0.7], [0.58, 0.7]]])


def test_inter_eye_distance_hand_case():
    gt = _face()
    per_image = inter_eye_distance(gt + OFFSET, gt)
    np.testing.assert_allclose(per_image, [0.05])  # raw ratio: 0.01 / 0.2
    result = evaluate("celeba_aligned", gt + OFFSET, gt)
    assert result["metric"] == "inter_eye_distance"
    assert result["mean"] == pytest.approx(5.0)  # reported x100
    np.testing.assert_allclose(result["per_image"], [5.0])


def test_inter_eye_distance_mixes_images_and_skips_coincident_eyes():
    gt = np.concatenate([_face(), _face(), _face()])
    gt[2, 1] = gt[2, 0]  # degenerate eyes: undefined
    pred = gt.copy()
    pred[0] += OFFSET
    pred[1] += 2 * OFFSET
    per_image = inter_eye_distance(pred, gt)
    np.testing.assert_allclose(per_image[:2], [0.05, 0.10])
    assert np.isnan(per_image[2])
    result = evaluate("celeba_wild", pred, gt)
    assert result["mean"] == pytest.approx(7.5)
    assert result["num_images"] == 3 and result["num_valid"] == 2


def test_visible_hand_case():
    gt = np.full((2, 3, 2), 0.5)
    pred = gt.copy()
    pred[0, 0] += [0.1, 0.0]  # L2 0.1
    pred[0, 1] += [0.0, 0.3]  # L2 0.3
    pred[0, 2] += [0.9, 0.9]  # invisible: must not count
    pred[1] += 0.2  # image 1 has no visible joint
    vis = np.array([[1, 1, 0], [0, 0, 0]])
    per_image = visible(pred, gt, vis)
    assert per_image[0] == pytest.approx(0.2)
    assert np.isnan(per_image[1])
    result = evaluate("cub_aligned", pred, gt, vis)
    assert result["mean"] == pytest.approx(20.0)  # x100
    assert result["num_valid"] == 1
    # Without visibility every joint counts (upstream's default).
    all_joints = (0.1 + 0.3 + 0.9 * math.sqrt(2)) / 3
    assert visible(pred, gt)[0] == pytest.approx(all_joints)


def test_visible_ignores_nan_annotations_of_invisible_joints():
    gt = np.full((1, 2, 2), 0.5)
    gt[0, 1] = np.nan
    pred = gt.copy()
    pred[0, 0] += [0.0, 0.05]
    assert visible(pred, gt, np.array([[1, 0]]))[0] == pytest.approx(0.05)


def test_mean_average_error_is_a_sum_over_visible_joints_at_256px():
    gt = np.full((1, 3, 2), 0.5)
    pred = gt.copy()
    pred[0, 0] += np.array([3.0, 4.0]) / 256  # 5 px
    pred[0, 1] += np.array([6.0, 8.0]) / 256  # 10 px
    pred[0, 2] += np.array([100.0, 0.0]) / 256  # invisible
    vis = np.array([[1, 1, 0]])
    np.testing.assert_allclose(mean_average_error(pred, gt, vis), [15.0])
    np.testing.assert_allclose(mean_average_error(pred, gt), [115.0])
    result = evaluate("taichi", pred, gt, vis)
    assert result["mean"] == pytest.approx(15.0)  # reported as is


def test_pck_counts_joints_strictly_within_6px():
    gt = np.full((1, 4, 2), 0.5)
    pred = gt.copy()
    pred[0, 0, 0] += 5.0 / 256  # 5 px: correct
    pred[0, 1, 1] += 7.0 / 256  # 7 px: wrong
    pred[0, 2] += np.array([3.0, 4.0]) / 256  # 5 px: correct
    pred[0, 3, 0] += 6.0 / 256  # exactly 6 px: wrong (strict)
    np.testing.assert_allclose(pck(pred, gt), [0.5])
    np.testing.assert_allclose(pck(pred[:, :2], gt[:, :2]), [0.5])
    np.testing.assert_allclose(pck(pred, gt, vis=np.array([[1, 0, 1, 0]])), [1.0])
    np.testing.assert_allclose(pck(pred, gt, threshold_px=8.0), [1.0])
    result = evaluate("deepfashion", pred, gt)
    assert result["mean"] == pytest.approx(50.0)
    assert result["lower_is_better"] is False


def test_orientation_invariant_small_skeleton():
    # Joints: 0 left, 1 right, 2 midline.
    perm = [1, 0, 2]
    gt = np.array([[[0.3, 0.5], [0.7, 0.5], [0.5, 0.2]]])
    mirrored = gt[:, [1, 0, 2]]
    np.testing.assert_allclose(orientation_invariant(mirrored, gt, perm), [0.0])
    # Every joint off by 0.01: the direct labelling wins, 0.01 x 128 = 1.28.
    np.testing.assert_allclose(orientation_invariant(gt + OFFSET, gt, perm), [1.28])


def test_orientation_invariant_h36m_through_evaluate():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.2, 0.8, size=(3, 32, 2))
    pred = gt.copy()
    pred[0] += OFFSET  # direct: 1.28
    pred[1] = swap_left_right(gt[1], H36M_SWAP_PERMUTATION)  # mirrored prediction: 0
    pred[2] = swap_left_right(gt[2] + OFFSET, H36M_SWAP_PERMUTATION)  # mirrored + offset
    np.testing.assert_allclose(orientation_invariant(pred, gt), [1.28, 0.0, 1.28], atol=1e-12)
    result = evaluate("human3.6m", pred, gt)
    assert result["mean"] == pytest.approx(2.56 / 3)
    assert evaluate("unaligned_human3.6m", pred, gt)["metric"] == "orientation_invariant"
    # An identity table disables the swap: image 1 is then scored directly.
    direct = evaluate("human3.6m", pred, gt, swap_permutation=np.arange(32))
    assert direct["per_image"][1] > 0.0


def test_registry_names_units_and_published_numbers():
    assert set(METRICS) == {
        "inter_eye_distance",
        "visible",
        "mean_average_error",
        "pck",
        "orientation_invariant",
    }
    assert {name: spec.report_scale for name, spec in METRICS.items()} == {
        "inter_eye_distance": 100.0,
        "visible": 100.0,
        "mean_average_error": 1.0,
        "pck": 100.0,
        "orientation_invariant": 1.0,
    }
    expected = {
        "celeba_aligned": ("inter_eye_distance", 3.60),
        "celeba_wild": ("inter_eye_distance", 4.35),
        "cub_aligned": ("visible", 5.06),
        "cub_all": ("visible", 5.4),
        "taichi": ("mean_average_error", 234.89),
        "deepfashion": ("pck", 70.0),
        "human3.6m": ("orientation_invariant", 4.45),
    }
    for dataset, (metric, published) in expected.items():
        protocol = DATASET_PROTOCOLS[dataset]
        assert (protocol.metric, protocol.published) == (metric, published)
        assert protocol.lower_is_better is (metric != "pck")
    for dataset in ("cub_001", "cub_002", "cub_003"):
        assert DATASET_PROTOCOLS[dataset].metric == "visible"
    assert DATASET_PROTOCOLS["unaligned_human3.6m"].metric == "orientation_invariant"
    assert {p.regressor for p in DATASET_PROTOCOLS.values()} == {"linear", "visible", "h36m"}
    assert DATASET_PROTOCOLS["taichi"].regressor == "visible"
    assert DATASET_PROTOCOLS["human3.6m"].regressor == "h36m"


def test_evaluate_rejects_unknown_dataset_and_bad_shapes():
    gt = _face()
    with pytest.raises(KeyError):
        evaluate("mnist", gt, gt)
    with pytest.raises(ValueError):
        inter_eye_distance(gt[:, :3], gt)
    with pytest.raises(ValueError):
        visible(gt, gt, np.ones((1, 4)))
