"""Inference with several subjects: n locations per keypoint, grouped into instances.

With ``num_subjects`` n, every keypoint's view-averaged map has a peak on each instance of the
object (:mod:`skp_core.subjects` finds them, strongest first). Peaks are found per keypoint,
so "the second peak of the nose" and "the second peak of the tail" need not be the same
animal. :func:`group_instances` assigns each keypoint's n peaks to n instances so that every
instance is a compact set of keypoints: a k-means over the peak locations in which each
keypoint gives exactly one peak to every instance (so two translated copies of a picture are
always told apart, however close). Instances are numbered left to right (by
the mean x of their keypoints), so a scene that moves little keeps its numbering.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from skp_core.gaussian import pixel_centre_locations
from skp_core.readout import (
    READOUTS,
    WEIGHTED_AVG_REFERENCE_SIZE,
    read_keypoints,
    subpixel_locations,
    weighted_average_locations,
)
from skp_core.subjects import subject_peak_indices

__all__ = [
    "EXACT_ASSIGNMENT_MAX_SUBJECTS",
    "GROUPING_ITERATIONS",
    "group_instances",
    "read_instances",
]

GROUPING_ITERATIONS = 20
"""Upper bound on assignment/update rounds; a handful suffice when instances are apart."""


EXACT_ASSIGNMENT_MAX_SUBJECTS = 6
"""Up to this many subjects every assignment is tried (6! = 720); beyond, nearest first."""


def _exact_assignment(cost: Tensor) -> Tensor:
    """For costs [N, n, n] (peak p, instance i): the peak [N, n] of each instance, least total.

    Every permutation is scored at once; the first of equal totals wins.
    """
    n = cost.shape[-1]
    perms = torch.tensor(list(itertools.permutations(range(n))), device=cost.device)  # [P, n]
    instance = torch.arange(n, device=cost.device)
    totals = cost[:, perms, instance].sum(-1)  # [N, P]: peak perms[p, i] goes to instance i
    return perms[totals.argmin(dim=-1)]


def _greedy_assignment(cost: Tensor) -> Tensor:
    """For costs [N, n, n] (peak p, instance i): peak index [N, n] given to each instance.

    Repeatedly takes the cheapest remaining (peak, instance) pair; the first one on ties.
    """
    count, n, _ = cost.shape
    work = cost.clone()
    assigned = torch.zeros(count, n, dtype=torch.long, device=cost.device)
    rows = torch.arange(count, device=cost.device)
    for _ in range(n):
        flat = work.flatten(1).argmin(dim=-1)
        peak = torch.div(flat, n, rounding_mode="floor")
        instance = flat - peak * n
        assigned[rows, instance] = peak
        work[rows, peak, :] = torch.inf
        work[rows, :, instance] = torch.inf
    return assigned


@torch.no_grad()
def group_instances(locations: Tensor) -> Tensor:
    """Which peak of each keypoint belongs to which instance: indices [B, K, n].

    ``locations`` [B, K, n, 2] holds each keypoint's n peaks; ``locations.gather(2, order)``
    with the result (expanded over the last axis) puts instance i's peak at position i.
    Starts from the peaks of the keypoint whose peaks are farthest apart, then alternates an
    assignment (the least total squared distance to the instance centres; nearest first
    beyond :data:`EXACT_ASSIGNMENT_MAX_SUBJECTS`) and a centre update until nothing changes.
    """
    if locations.dim() != 4 or locations.shape[-1] != 2:
        raise ValueError(f"locations must have shape [B, K, n, 2], got {tuple(locations.shape)}")
    batch, keypoints, n, _ = locations.shape
    work = locations.detach().double()
    identity = torch.arange(n, device=locations.device).expand(batch, keypoints, n)
    if n == 1 or keypoints == 0:
        return identity.clone()
    pairwise = torch.cdist(work.reshape(-1, n, 2), work.reshape(-1, n, 2))
    pairwise = pairwise + torch.diag(torch.full((n,), torch.inf, dtype=work.dtype))
    spread = pairwise.amin(dim=(-2, -1)).reshape(batch, keypoints)
    seed = spread.argmax(dim=-1)
    centres = work[torch.arange(batch), seed]  # [B, n, 2]
    order = identity.clone()
    for _ in range(GROUPING_ITERATIONS):
        cost = (work[:, :, :, None, :] - centres[:, None, None, :, :]).square().sum(-1)
        assign = _exact_assignment if n <= EXACT_ASSIGNMENT_MAX_SUBJECTS else _greedy_assignment
        new_order = assign(cost.reshape(-1, n, n)).reshape(batch, keypoints, n)
        grouped = work.gather(2, new_order[..., None].expand(-1, -1, -1, 2))
        centres = grouped.mean(dim=1)
        changed = not torch.equal(new_order, order)
        order = new_order
        if not changed:
            break
    # Number the instances left to right (then top to bottom) by their centres.
    by_y = torch.sort(centres[..., 1], dim=-1, stable=True).indices
    x_in_y_order = centres[..., 0].gather(1, by_y)
    by_x = by_y.gather(1, torch.sort(x_in_y_order, dim=-1, stable=True).indices)  # [B, n]
    return order.gather(2, by_x[:, None, :].expand(-1, keypoints, -1))


def read_instances(
    maps: Tensor, num_subjects: int = 1, readout: str = "argmax", distance: float = 5.0
) -> tuple[Tensor, Tensor]:
    """Locations [B, n, K, 2] (normalized x, y) and scores [B, n, K] of maps [B, K, H, W].

    Every keypoint is read at each of its n peaks, with the same read-out as
    :func:`~skp_core.readout.read_keypoints` (weighted_avg keeps, for each peak, the pixels
    nearer to it than to the keypoint's other peaks); the score is the map's value at the peak.
    The peaks are then grouped into instances (:func:`group_instances`). With one subject this
    is :func:`~skp_core.readout.read_keypoints` with an instance axis.
    """
    if maps.dim() != 4:
        raise ValueError(f"maps must have shape [B, K, H, W], got {tuple(maps.shape)}")
    if num_subjects == 1:
        locations, scores = read_keypoints(maps, readout, distance)
        return locations[:, None], scores[:, None]
    if readout not in READOUTS:
        raise ValueError(f"unknown read-out {readout!r}; choose one of {READOUTS}")
    height, width = maps.shape[-2:]
    peaks = subject_peak_indices(maps, num_subjects)  # [B, K, n]
    if readout == "argmax":
        dtype = maps.dtype if maps.dtype.is_floating_point else torch.float32
        locations = pixel_centre_locations(peaks, height, width, dtype)
    elif readout == "subpixel":
        locations = subpixel_locations(maps, peaks)
    else:
        scale = max(height, width) / WEIGHTED_AVG_REFERENCE_SIZE
        locations = weighted_average_locations(
            maps, distance * scale if distance >= 0 else -1, peaks
        )
    scores = maps.flatten(-2).gather(-1, peaks)  # [B, K, n]
    order = group_instances(locations)
    locations = locations.gather(2, order[..., None].expand(-1, -1, -1, 2))
    scores = scores.gather(2, order)
    return locations.transpose(1, 2), scores.transpose(1, 2)
