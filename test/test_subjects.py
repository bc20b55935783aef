"""Several subjects per image (num_subjects): peaks, targets, ranking, loss, instances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from skp_core.candidates import (
    gaussian_kl_scores,
    gaussian_kl_scores_reference,
    rank_gaussian_candidates,
)
from skp_core.instances import group_instances, read_instances
from skp_core.losses import localization_loss
from skp_core.readout import read_keypoints
from skp_core.subjects import subject_gaussian_maps, subject_locations, subject_peak_indices


def _reference_peaks(map_2d: np.ndarray, num: int) -> list[tuple[int, int]]:
    """The reference's find_k_max_pixels + mask_radius, written out with loops over pixels."""
    work = map_2d.astype(np.float64).copy()
    height, width = work.shape
    found = []
    for _ in range(num):
        flat = int(np.argmax(work))
        row, col = divmod(flat, width)
        found.append((row, col))
        centre_row, centre_col = row + 0.5, col + 0.5
        for i in range(height):
            for j in range(width):
                if (j - centre_col) ** 2 + (i - centre_row) ** 2 <= (0.05 * height) ** 2:
                    work[i, j] = 0.0
    return found


def _blob(height: int, width: int, row: float, col: float, sigma: float = 1.5) -> torch.Tensor:
    i = torch.arange(height, dtype=torch.float64)[:, None]
    j = torch.arange(width, dtype=torch.float64)[None, :]
    return torch.exp(-((i - row) ** 2 + (j - col) ** 2) / (2 * sigma**2))


def test_the_masking_disc_is_centred_half_a_pixel_off_as_in_the_reference() -> None:
    # 20 rows: radius 0.05 * 20 = 1 pixel around the centre (5.5, 5.5) of the max at (5, 5).
    # Integer indices are compared: (6, 6) is at distance^2 0.5 (masked), (4, 5) at 2.5 (kept).
    maps = torch.zeros(1, 20, 40)
    maps[0, 5, 5] = 1.0
    maps[0, 6, 6] = 0.9
    maps[0, 4, 5] = 0.8
    peaks = subject_peak_indices(maps, 2)
    assert peaks.tolist() == [[5 * 40 + 5, 4 * 40 + 5]]
    assert maps[0, 6, 6] == 0.9  # the input is not modified
    locations = subject_locations(maps, 2)
    assert torch.allclose(locations[0], torch.tensor([[5.5 / 40, 5.5 / 20], [5.5 / 40, 4.5 / 20]]))


@pytest.mark.parametrize("shape", [(48, 48), (40, 64), (64, 40)])
def test_peaks_equal_the_written_out_reference(shape: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(3)
    maps = torch.rand(6, *shape, generator=generator, dtype=torch.float64)
    peaks = subject_peak_indices(maps, 4)
    width = shape[1]
    for k in range(maps.shape[0]):
        expected = _reference_peaks(maps[k].numpy(), 4)
        assert [divmod(int(p), width) for p in peaks[k]] == expected


def test_one_subject_is_the_argmax() -> None:
    maps = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    flat = maps.flatten(-2).argmax(-1)
    assert torch.equal(subject_peak_indices(maps, 1)[..., 0], flat)
    assert subject_locations(maps, 1).shape == (2, 3, 1, 2)


def test_target_is_the_mean_of_one_gaussian_per_subject() -> None:
    height, width, sigma = 24, 36, 2.0
    locations = torch.tensor([[[4.5 / width, 5.5 / height], [30.5 / width, 18.5 / height]]])
    target = subject_gaussian_maps(locations, height, width, sigma)[0].double()
    expected = 0.5 * (_blob(height, width, 5, 4, sigma) + _blob(height, width, 18, 30, sigma))
    assert torch.allclose(target, expected, atol=1e-6)
    assert abs(float(target[5, 4]) - 0.5) < 1e-6  # two far-apart subjects: peaks 1/2


@pytest.mark.parametrize("num_subjects", [2, 3])
@pytest.mark.parametrize("shape", [(32, 32), (24, 40)])
def test_kl_scores_equal_the_written_out_oracle(num_subjects: int, shape: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(num_subjects)
    maps = torch.randn(2, 9, *shape, generator=generator) * 3
    fast = gaussian_kl_scores(maps, 1.5, chunk=4, num_subjects=num_subjects)
    oracle = gaussian_kl_scores_reference(maps, 1.5, num_subjects=num_subjects)
    assert torch.allclose(fast, oracle, rtol=1e-4, atol=1e-5)


def test_two_subject_ranking_prefers_maps_with_two_peaks() -> None:
    height = width = 40
    sigma, eps = 2.0, 1e-5
    single = _blob(height, width, 10, 10, sigma)
    double = 0.5 * (_blob(height, width, 10, 10, sigma) + _blob(height, width, 30, 28, sigma))
    # Maps whose softmax is exactly a normalized target: KL 0 against that target. Shifted to
    # be >= 0, like attention: the reference masks by multiplying with zero.
    maps = torch.stack([torch.log(single + eps), torch.log(double + eps)]) - math.log(eps)
    maps = maps[None].float()
    assert rank_gaussian_candidates(maps, 2, sigma, num_subjects=1)[0].tolist() == [0, 1]
    assert rank_gaussian_candidates(maps, 2, sigma, num_subjects=2)[0].tolist() == [1, 0]
    scores = gaussian_kl_scores(maps, sigma, num_subjects=2)[0]
    assert abs(float(scores[1])) < 1e-4


def test_two_subject_sharpening_loss_targets_both_peaks() -> None:
    height, width, sigma = 32, 48, 1.0
    double = 0.5 * (_blob(height, width, 8, 8, sigma) + _blob(height, width, 20, 40, sigma))
    maps = double.float()[None, None]
    assert float(localization_loss(maps, sigma, num_subjects=2)) < 1e-10
    # Against one Gaussian, the second peak and the halved first one are the error.
    assert float(localization_loss(maps, sigma, num_subjects=1)) > 1e-4


def _side_by_side_maps(num_keypoints: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps of two copies of a picture side by side, the right copy brighter for some keypoints."""
    height, width = 64, 64
    generator = torch.Generator().manual_seed(7)
    rows = torch.randint(8, 56, (num_keypoints,), generator=generator)
    cols = torch.randint(8, 56, (num_keypoints,), generator=generator)
    single = torch.stack([_blob(height, width, r, c, 2.0) for r, c in zip(rows, cols, strict=True)])
    gain = torch.tensor([1.0, 0.8, 1.0, 0.9, 0.7])[:num_keypoints, None, None]
    doubled = torch.cat([single * gain, single], dim=-1)  # right copy = full strength
    return single[None].float(), doubled[None].float()


@pytest.mark.parametrize("readout", ["argmax", "subpixel", "weighted_avg"])
def test_two_copies_side_by_side_find_each_keypoint_once_per_copy(readout: str) -> None:
    single, doubled = _side_by_side_maps()
    alone, _ = read_keypoints(single, readout, distance=-1 if readout == "weighted_avg" else 5)
    locations, scores = read_instances(doubled, 2, readout, -1 if readout == "weighted_avg" else 5)
    assert locations.shape == (1, 2, 5, 2) and scores.shape == (1, 2, 5)
    left, right = locations[0, 0].double(), locations[0, 1].double()
    expected_left = alone[0].double() * torch.tensor([0.5, 1.0], dtype=torch.float64)
    expected_right = expected_left + torch.tensor([0.5, 0.0], dtype=torch.float64)
    assert torch.allclose(left, expected_left, atol=1e-4)
    assert torch.allclose(right, expected_right, atol=1e-4)
    assert torch.all(scores[0, 1] >= scores[0, 0])  # the right copy is the brighter one


def test_one_subject_reads_exactly_as_before() -> None:
    maps = torch.rand(2, 4, 20, 20, generator=torch.Generator().manual_seed(1))
    for readout in ("argmax", "subpixel", "weighted_avg"):
        locations, scores = read_instances(maps, 1, readout)
        expected, expected_scores = read_keypoints(maps, readout)
        assert torch.equal(locations[:, 0], expected) and torch.equal(scores[:, 0], expected_scores)


def test_grouping_by_hand() -> None:
    # Three keypoints of two animals at x ~ 0.2 and x ~ 0.8; peaks arrive in mixed order.
    peaks = torch.tensor(
        [
            [
                [[0.8, 0.5], [0.2, 0.5]],
                [[0.25, 0.3], [0.85, 0.3]],
                [[0.75, 0.7], [0.15, 0.7]],
            ]
        ]
    )
    order = group_instances(peaks)
    assert order.tolist() == [[[1, 0], [0, 1], [1, 0]]]
    grouped = peaks.gather(2, order[..., None].expand(-1, -1, -1, 2))
    assert torch.all(grouped[0, :, 0, 0] < 0.5) and torch.all(grouped[0, :, 1, 0] > 0.5)


def test_weighted_average_with_several_peaks_keeps_each_peaks_own_pixels() -> None:
    # Two equal 3x3 plateaus, each inside the 3-pixel masking disc of its first pixel: with
    # distance -1 each centroid is its own plateau's centre.
    maps = torch.zeros(1, 1, 60, 60)
    maps[0, 0, 4:7, 4:7] = 1.0
    maps[0, 0, 40:43, 24:27] = 1.0
    locations, _ = read_instances(maps, 2, "weighted_avg", -1)
    expected = torch.tensor([[5.5 / 60, 5.5 / 60], [25.5 / 60, 41.5 / 60]])
    assert torch.allclose(locations[0, :, 0], expected, atol=1e-5)
    assert math.isclose(float(maps.sum()), 18.0)  # untouched


def test_exact_and_greedy_assignments_agree_where_greedy_is_right() -> None:
    from skp_core.instances import _exact_assignment, _greedy_assignment

    # Greedy takes the cheapest pair (peak 1 -> instance 0, cost 1) and pays 10 for the rest;
    # the exact assignment pays 2 + 2.
    cost = torch.tensor([[[2.0, 10.0], [1.0, 2.0]]])
    assert _exact_assignment(cost).tolist() == [[0, 1]]
    assert _greedy_assignment(cost).tolist() == [[1, 0]]
    easy = torch.tensor([[[0.0, 5.0, 5.0], [5.0, 5.0, 0.0], [5.0, 0.0, 5.0]]])
    assert _exact_assignment(easy).tolist() == _greedy_assignment(easy).tolist() == [[0, 2, 1]]


def test_many_subjects_group_with_the_nearest_first_assignment() -> None:
    # Eight copies of a three-keypoint pattern in a row, peaks in shuffled order.
    pattern = torch.tensor([[0.01, 0.2], [0.05, 0.5], [0.03, 0.8]])
    offsets = torch.arange(8, dtype=torch.float32) * 0.12
    peaks = pattern[:, None, :] + torch.stack([offsets, torch.zeros(8)], dim=-1)[None]
    shuffled = peaks[:, torch.randperm(8, generator=torch.Generator().manual_seed(0))][None]
    order = group_instances(shuffled)
    grouped = shuffled.gather(2, order[..., None].expand(-1, -1, -1, 2))
    assert torch.allclose(grouped[0], peaks)
