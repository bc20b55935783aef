"""Tests for skp_core.regression: exact recovery of known linear maps, visibility, H3.6M swaps."""

import numpy as np
import pytest

from skp_core.regression import (
    H36M_JOINT_NAMES,
    H36M_NUM_JOINTS,
    H36M_SWAP_PAIRS,
    H36M_SWAP_PERMUTATION,
    H36M_UPSTREAM_SWAP_PAIRS,
    apply_regressor,
    fit_linear_regressor,
    fit_linear_regressor_h36m,
    fit_linear_regressor_visible,
    permutation_from_pairs,
    swap_left_right,
)


def _linear_targets(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Targets that are, by construction, exactly (x - 0.5) W + 0.5."""
    n = x.shape[0]
    return ((x.reshape(n, -1) - 0.5) @ w + 0.5).reshape(n, -1, 2)


def _problem(n: int, k: int, j: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, size=(n, k, 2))
    w = rng.normal(size=(2 * k, 2 * j))
    return x, w, _linear_targets(x, w)


# ------------------------------------------------------------------ plain regressor


def test_recovers_known_linear_map_exactly():
    x, w, y = _problem(n=60, k=5, j=4, seed=0)
    fitted = fit_linear_regressor(x, y)
    assert fitted.shape == (10, 8)
    np.testing.assert_allclose(fitted, w, atol=1e-9)
    np.testing.assert_allclose(apply_regressor(fitted, x), y, atol=1e-9)


def test_no_bias_centre_maps_to_centre():
    _, w, _ = _problem(n=1, k=3, j=7, seed=1)
    centre = np.full((4, 3, 2), 0.5)
    np.testing.assert_array_equal(apply_regressor(w, centre), np.full((4, 7, 2), 0.5))


def test_no_bias_scaling_about_centre_is_exact_but_translation_is_not():
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(40, 3, 2))
    # Scaling by 2 about the image centre is linear in the centred coordinates: W = 2 I.
    np.testing.assert_allclose(
        fit_linear_regressor(x, 2.0 * (x - 0.5) + 0.5), 2.0 * np.eye(6), atol=1e-12
    )
    # A translation would need a bias term, which the protocol deliberately does not have.
    shifted = x + 0.1
    residual = apply_regressor(fit_linear_regressor(x, shifted), x) - shifted
    assert np.abs(residual).max() > 1e-3


def test_shape_errors():
    x, w, y = _problem(n=10, k=2, j=2, seed=3)
    with pytest.raises(ValueError):
        fit_linear_regressor(x, y[:5])
    with pytest.raises(ValueError):
        fit_linear_regressor(x.reshape(10, -1), y)
    with pytest.raises(ValueError):
        apply_regressor(w[:2], x)


# ------------------------------------------------------------------ visibility regressor


def test_visible_regressor_ignores_garbage_in_invisible_rows():
    x, w, y = _problem(n=80, k=4, j=6, seed=4)
    rng = np.random.default_rng(5)
    vis = (rng.uniform(size=(80, 6)) > 0.3).astype(np.int64)
    vis[:, 1] = vis[:, 0]  # two joints sharing a pattern go through one solve
    vis[:, 2] = 1
    vis[:, 3] = 1
    garbage = y.copy()
    garbage[vis == 0] = 1e9
    garbage[:3, 4][vis[:3, 4] == 0] = np.nan  # NaN must not leak either

    fitted = fit_linear_regressor_visible(x, garbage, vis)
    np.testing.assert_allclose(fitted, w, atol=1e-6)
    # Sanity: a plain fit is ruined by the same garbage.
    plain = fit_linear_regressor(x, np.nan_to_num(garbage, nan=1e9))
    assert np.abs(plain - w).max() > 1.0


def test_visible_regressor_with_full_visibility_equals_plain_fit():
    x, _, y = _problem(n=30, k=3, j=5, seed=6)
    y = y + np.random.default_rng(7).normal(scale=0.01, size=y.shape)  # not exactly linear
    np.testing.assert_allclose(
        fit_linear_regressor_visible(x, y, np.ones((30, 5))), fit_linear_regressor(x, y)
    )


def test_never_visible_joint_gets_zero_weights():
    x, w, y = _problem(n=30, k=3, j=3, seed=8)
    vis = np.ones((30, 3))
    vis[:, 2] = 0
    fitted = fit_linear_regressor_visible(x, y, vis)
    np.testing.assert_array_equal(fitted[:, 4:], 0.0)
    np.testing.assert_allclose(fitted[:, :4], w[:, :4], atol=1e-9)


def test_visible_regressor_checks_visibility_shape():
    x, _, y = _problem(n=10, k=2, j=3, seed=9)
    with pytest.raises(ValueError):
        fit_linear_regressor_visible(x, y, np.ones((10, 2)))


# ------------------------------------------------------------------ Human3.6M swap table


def test_h36m_permutation_is_an_involution_with_the_true_thumb_site_pair():
    perm = H36M_SWAP_PERMUTATION
    assert perm.shape == (32,)
    np.testing.assert_array_equal(np.sort(perm), np.arange(32))
    np.testing.assert_array_equal(perm[perm], np.arange(32))
    assert perm[21] == 29 and perm[29] == 21
    assert perm[28] == 20 and perm[20] == 28
    assert (21, 29) in H36M_SWAP_PAIRS and (21, 28) not in H36M_SWAP_PAIRS
    assert not perm.flags.writeable


def test_h36m_pairs_mirror_names_and_midline_is_fixed():
    assert len(H36M_JOINT_NAMES) == H36M_NUM_JOINTS == 32
    for a, b in H36M_SWAP_PAIRS:
        left, right = sorted((H36M_JOINT_NAMES[a], H36M_JOINT_NAMES[b]))
        assert left.startswith("left_") and right.startswith("right_")
        assert left.removeprefix("left_") == right.removeprefix("right_")
    sided = {i for i, name in enumerate(H36M_JOINT_NAMES) if name.startswith(("left_", "right_"))}
    paired = {i for pair in H36M_SWAP_PAIRS for i in pair}
    # Upstream leaves the clavicles (16, 24) unswapped; we keep that part of the protocol.
    assert sided - paired == {16, 24}
    for i in set(range(32)) - paired:
        assert H36M_SWAP_PERMUTATION[i] == i


def test_upstream_table_is_rejected_because_it_is_not_a_permutation():
    with pytest.raises(ValueError):
        permutation_from_pairs(H36M_UPSTREAM_SWAP_PAIRS, 32)


def test_swap_left_right_on_a_small_skeleton():
    points = np.arange(12, dtype=float).reshape(2, 3, 2)  # joints 0, 1, 2 per sample
    swapped = swap_left_right(points, [1, 0, 2])
    np.testing.assert_array_equal(swapped[:, 0], points[:, 1])
    np.testing.assert_array_equal(swapped[:, 1], points[:, 0])
    np.testing.assert_array_equal(swapped[:, 2], points[:, 2])
    np.testing.assert_array_equal(swap_left_right(swapped, [1, 0, 2]), points)
    with pytest.raises(ValueError):
        swap_left_right(points, [1, 2, 0])  # a 3-cycle is not a mirror swap
    with pytest.raises(ValueError):
        swap_left_right(points, [1, 1, 2])


# ------------------------------------------------------------------ Human3.6M regressor


def _h36m_problem(n: int, num_flipped: int, seed: int):
    """Exactly linear targets, then the first `num_flipped` samples get swapped labels."""
    x, w, y = _problem(n=n, k=10, j=H36M_NUM_JOINTS, seed=seed)
    flipped = np.zeros(n, dtype=bool)
    flipped[:num_flipped] = True
    observed = np.where(flipped[:, None, None], swap_left_right(y, H36M_SWAP_PERMUTATION), y)
    return x, w, y, observed, flipped


def test_h36m_swap_loop_finds_and_fixes_flipped_samples():
    x, w, y, observed, flipped = _h36m_problem(n=200, num_flipped=80, seed=10)
    # min_swaps=0: keep going until no sample prefers its swapped target.
    result = fit_linear_regressor_h36m(x, observed, H36M_SWAP_PERMUTATION, min_swaps=0)
    assert result.converged
    assert result.iterations >= 2  # at least one re-labelling, then a clean refit
    np.testing.assert_array_equal(result.swapped, flipped)
    np.testing.assert_allclose(result.weights, w, atol=1e-8)
    np.testing.assert_allclose(apply_regressor(result.weights, x), y, atol=1e-8)
    assert result.num_preferring_swap == 0


def test_h36m_half_flipped_is_fixed_up_to_one_global_relabelling():
    x, _, _, observed, flipped = _h36m_problem(n=200, num_flipped=100, seed=11)
    result = fit_linear_regressor_h36m(x, observed, min_swaps=0)
    assert result.converged
    # Either the flipped half or the other half gets re-labelled: both are exact fits.
    relabelled = result.swapped ^ flipped
    assert relabelled.all() or not relabelled.any()
    final_targets = np.where(
        result.swapped[:, None, None], swap_left_right(observed, H36M_SWAP_PERMUTATION), observed
    )
    np.testing.assert_allclose(apply_regressor(result.weights, x), final_targets, atol=1e-8)


def test_h36m_default_min_swaps_stops_with_at_most_ten_left():
    x, _, _, observed, flipped = _h36m_problem(n=200, num_flipped=80, seed=14)
    result = fit_linear_regressor_h36m(x, observed)  # upstream's rule: stop at <= 10
    assert result.converged
    assert result.num_preferring_swap <= 10
    assert (result.swapped ^ flipped).sum() <= 10


def test_h36m_iteration_cap_is_respected():
    x, _, _, observed, _ = _h36m_problem(n=200, num_flipped=80, seed=12)
    result = fit_linear_regressor_h36m(x, observed, max_iterations=1)
    assert result.iterations == 1
    assert not result.converged
    assert result.num_preferring_swap > 10
    assert not result.swapped.any()  # pending swaps are not applied without a refit
    np.testing.assert_allclose(result.weights, fit_linear_regressor(x, observed))
    with pytest.raises(ValueError):
        fit_linear_regressor_h36m(x, observed, max_iterations=0)


def test_h36m_few_flips_stay_below_min_swaps():
    x, _, _, observed, _ = _h36m_problem(n=200, num_flipped=5, seed=13)
    result = fit_linear_regressor_h36m(x, observed, min_swaps=10)
    assert result.converged and result.iterations == 1
    assert not result.swapped.any()
    np.testing.assert_allclose(result.weights, fit_linear_regressor(x, observed))
