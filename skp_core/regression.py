"""Linear regression from discovered keypoints to annotated ones (METHOD.md §6).

The evaluation protocol never looks at what a discovered keypoint "means": it fits one linear map
from all K discovered points to all J annotated points on the training split and scores the
mapped test predictions. Conventions (docs/architecture.md): keypoints are normalized (x, y) in
[0, 1]; discovered arrays are [N, K, 2], annotations [N, J, 2], visibility [N, J] in {0, 1}.

The regressor has NO bias: both sides are centred by subtracting 0.5 (the image centre), so
`W = pinv(Xc^T Xc) Xc^T Yc` maps the image centre to the image centre. W is [2K, 2J] and acts on
the flattened (x0, y0, x1, y1, ...) layout, which is also how bundles store it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "H36M_JOINT_NAMES",
    "H36M_NUM_JOINTS",
    "H36M_SWAP_PAIRS",
    "H36M_SWAP_PERMUTATION",
    "H36M_UPSTREAM_SWAP_PAIRS",
    "REGRESSOR_KINDS",
    "H36MRegression",
    "apply_regressor",
    "fit_linear_regressor",
    "fit_linear_regressor_h36m",
    "fit_linear_regressor_visible",
    "fit_regressor",
    "permutation_from_pairs",
    "swap_left_right",
]

# --------------------------------------------------------------------------------------------
# Human3.6M left/right mirror table
# --------------------------------------------------------------------------------------------

# The standard 32-joint Human3.6M skeleton (mocap names in brackets), as stored in the
# `keypoints_2d` arrays of the simplified Human3.6M release:
#   0 hip [Hips]          1-5 right leg [RightUpLeg, RightLeg, RightFoot, RightToeBase, Site]
#   6-10 left leg (same order)            11 spine [Spine]   12 thorax [Spine1]
#   13 neck [Neck]        14 head [Head]  15 head top [Site]
#   16-23 left arm  [LeftShoulder (clavicle), LeftArm (shoulder), LeftForeArm (elbow),
#                    LeftHand (wrist), LeftHandThumb, Site, L_Wrist_End, Site]
#   24-31 right arm (same order as the left arm)
H36M_JOINT_NAMES: tuple[str, ...] = (
    "hip",
    "right_hip",
    "right_knee",
    "right_ankle",
    "right_toe_base",
    "right_toe_site",
    "left_hip",
    "left_knee",
    "left_ankle",
    "left_toe_base",
    "left_toe_site",
    "spine",
    "thorax",
    "neck",
    "head",
    "head_site",
    "left_clavicle",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "left_thumb",
    "left_thumb_site",
    "left_wrist_end",
    "left_wrist_end_site",
    "right_clavicle",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "right_thumb",
    "right_thumb_site",
    "right_wrist_end",
    "right_wrist_end_site",
)
H36M_NUM_JOINTS = len(H36M_JOINT_NAMES)

# The table upstream uses (inherited from KeypointGAN), kept only to document the difference:
#   (1,6) (2,7) (3,8) (4,9) (5,10) (17,25) (18,26) (19,27) (20,28) (21,28) (22,30) (23,31)
# Upstream turns it into an index list by writing p[a] = b, p[b] = a pair after pair, so
# (20, 28) followed by (21, 28) leaves p[20] = 28, p[21] = 28, p[28] = 21, p[29] = 29: the
# "swapped" skeleton holds the right thumb twice, loses the left thumb, and never moves the
# right thumb site (29). That is not a permutation. The left thumb site (21) mirrors the right
# thumb site (29), so the true pair is (21, 29).
H36M_UPSTREAM_SWAP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 6),
    (2, 7),
    (3, 8),
    (4, 9),
    (5, 10),
    (17, 25),
    (18, 26),
    (19, 27),
    (20, 28),
    (21, 28),
    (22, 30),
    (23, 31),
)

# Our table: upstream's with one change, (21, 28) -> (21, 29), the bug above. The evaluation
# protocol stays otherwise identical: the clavicle joints (16, 24), which sit on the midline next
# to the neck in Human3.6M mocap, stay unswapped as upstream has them.
# Every other joint (0, 11-16, 24: midline and clavicles) maps to itself.
H36M_SWAP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 6),
    (2, 7),
    (3, 8),
    (4, 9),
    (5, 10),
    (17, 25),
    (18, 26),
    (19, 27),
    (20, 28),
    (21, 29),
    (22, 30),
    (23, 31),
)


def permutation_from_pairs(pairs: Sequence[tuple[int, int]], num_joints: int) -> np.ndarray:
    """Index array swapping each pair and fixing every other joint.

    Raises on a joint used twice (upstream's (20, 28) + (21, 28) mistake), so what comes out is
    always an involution: applying it twice gives the identity.
    """
    permutation = np.arange(num_joints, dtype=np.int64)
    used: set[int] = set()
    for a, b in pairs:
        if a == b or not (0 <= a < num_joints and 0 <= b < num_joints):
            raise ValueError(f"invalid swap pair ({a}, {b}) for {num_joints} joints")
        if a in used or b in used:
            raise ValueError(f"joint of pair ({a}, {b}) already appears in another pair")
        used.update((a, b))
        permutation[a], permutation[b] = b, a
    return permutation


H36M_SWAP_PERMUTATION: np.ndarray = permutation_from_pairs(H36M_SWAP_PAIRS, H36M_NUM_JOINTS)
H36M_SWAP_PERMUTATION.setflags(write=False)


def _check_swap(permutation: np.ndarray | Sequence[int], num_joints: int) -> np.ndarray:
    """Validate a left/right table so a bad one fails loudly instead of duplicating joints.

    A mirror swap must be an involution (swapping twice is the identity); the H3.6M loop relies
    on that to track which samples are swapped with a single XOR.
    """
    perm = np.asarray(permutation, dtype=np.int64)
    if perm.shape != (num_joints,):
        raise ValueError(f"swap permutation has shape {perm.shape}, expected ({num_joints},)")
    if not np.array_equal(np.sort(perm), np.arange(num_joints)):
        raise ValueError("swap table is not a permutation of the joints")
    if not np.array_equal(perm[perm], np.arange(num_joints)):
        raise ValueError("swap permutation is not an involution (pairs only, no longer cycles)")
    return perm


def swap_left_right(points: np.ndarray, permutation: np.ndarray | Sequence[int]) -> np.ndarray:
    """Relabel joints left<->right: out[..., j, :] = points[..., permutation[j], :].

    `permutation` must be an involution (e.g. `H36M_SWAP_PERMUTATION`). Works on any
    [..., J, 2] array (one skeleton or a batch); returns a new float64 array.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim < 2 or pts.shape[-1] != 2:
        raise ValueError(f"points must be [..., J, 2], got {pts.shape}")
    perm = _check_swap(permutation, pts.shape[-2])
    return pts[..., perm, :]


# --------------------------------------------------------------------------------------------
# Plain and visibility-aware regressors
# --------------------------------------------------------------------------------------------


def _as_points(array: np.ndarray, name: str) -> np.ndarray:
    """float64 [N, P, 2] view of a keypoint array (accepts CPU tensors through np.asarray)."""
    pts = np.asarray(array, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[-1] != 2:
        raise ValueError(f"{name} must be [N, P, 2], got {pts.shape}")
    return pts


def _centred_pair(discovered: np.ndarray, annotations: np.ndarray) -> tuple[np.ndarray, ...]:
    """Flatten both sides to [N, 2P] and subtract 0.5: the no-bias design of the protocol."""
    x = _as_points(discovered, "discovered")
    y = _as_points(annotations, "annotations")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} discovered samples but {y.shape[0]} annotated samples")
    n = x.shape[0]
    return x.reshape(n, -1) - 0.5, y.reshape(n, -1) - 0.5


def _least_squares(xc: np.ndarray, yc: np.ndarray) -> np.ndarray:
    """`pinv(Xc^T Xc) Xc^T Yc`, the exact normal-equation form METHOD.md prescribes."""
    return np.linalg.pinv(xc.T @ xc) @ (xc.T @ yc)


def fit_linear_regressor(discovered: np.ndarray, annotations: np.ndarray) -> np.ndarray:
    """Fit W [2K, 2J] with (annotations - 0.5) ~ (discovered - 0.5) W, no bias term."""
    xc, yc = _centred_pair(discovered, annotations)
    return _least_squares(xc, yc)


def apply_regressor(weights: np.ndarray, discovered: np.ndarray) -> np.ndarray:
    """Map discovered keypoints [N, K, 2] to predicted annotations [N, J, 2]."""
    w = np.asarray(weights, dtype=np.float64)
    x = _as_points(discovered, "discovered")
    n = x.shape[0]
    if w.ndim != 2 or w.shape[0] != 2 * x.shape[1] or w.shape[1] % 2:
        raise ValueError(f"weights {w.shape} do not fit {x.shape[1]} discovered keypoints")
    return ((x.reshape(n, -1) - 0.5) @ w + 0.5).reshape(n, -1, 2)


def fit_linear_regressor_visible(
    discovered: np.ndarray, annotations: np.ndarray, visibility: np.ndarray
) -> np.ndarray:
    """Fit W [2K, 2J] where each joint's two output columns only see rows where it is visible.

    Invisible annotations are never read (they may hold -1, NaN or anything else). Joints
    with the same visibility pattern share one solve, so the loop runs once per distinct
    pattern (at most J <= 32 solves of a 2K x 2K system; often far fewer). A joint visible in
    no row gets zero weights, i.e. it is always predicted at the image centre.
    """
    xc, yc = _centred_pair(discovered, annotations)
    n, two_k = xc.shape
    num_joints = yc.shape[1] // 2
    vis = np.asarray(visibility)
    if vis.shape != (n, num_joints):
        raise ValueError(f"visibility must be [{n}, {num_joints}], got {vis.shape}")
    patterns, pattern_of_joint = np.unique(vis.T > 0, axis=0, return_inverse=True)
    pattern_of_joint = pattern_of_joint.reshape(-1)

    y_joints = yc.reshape(n, num_joints, 2)
    weights = np.zeros((two_k, num_joints, 2))
    for index, rows in enumerate(patterns):  # one solve per distinct visibility pattern
        joints = np.flatnonzero(pattern_of_joint == index)
        x_rows = xc[rows]
        targets = y_joints[rows][:, joints, :].reshape(x_rows.shape[0], 2 * joints.size)
        weights[:, joints, :] = _least_squares(x_rows, targets).reshape(two_k, joints.size, 2)
    return weights.reshape(two_k, 2 * num_joints)


# --------------------------------------------------------------------------------------------
# Human3.6M: regressor with left/right target re-labelling
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class H36MRegression:
    """Outcome of `fit_linear_regressor_h36m`.

    weights: W [2K, 2J] fitted on the final targets.
    swapped: [N] bool, training samples whose targets W was fitted on are the left/right swap of
        the given annotations.
    iterations: number of least-squares fits performed (>= 1).
    converged: True when the last fit left <= min_swaps samples preferring a swap; False when
        the iteration cap stopped the loop (the pending swaps are then not applied).
    num_preferring_swap: how many samples preferred the swap after the last fit.
    """

    weights: np.ndarray
    swapped: np.ndarray
    iterations: int
    converged: bool
    num_preferring_swap: int


def fit_linear_regressor_h36m(
    discovered: np.ndarray,
    annotations: np.ndarray,
    swap_permutation: np.ndarray | Sequence[int] = H36M_SWAP_PERMUTATION,
    min_swaps: int = 10,
    max_iterations: int = 100,
) -> H36MRegression:
    """Fit, re-label samples whose left/right-swapped target fits better, refit; repeat.

    Why: unsupervised keypoints cannot tell a person's left from right when they face the other
    way, so a fixed linear map is fighting annotation labels that flip with orientation. After
    each fit, a sample whose prediction is closer (mean joint L2) to its swapped target than to
    its target has the target swapped. The loop stops when at most `min_swaps` samples prefer
    swapping (upstream's rule, default 10) or after `max_iterations` fits.
    """
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    xc, yc = _centred_pair(discovered, annotations)
    n = xc.shape[0]
    targets = yc.reshape(n, -1, 2)
    perm = _check_swap(swap_permutation, targets.shape[1])
    solver = np.linalg.pinv(xc.T @ xc) @ xc.T  # [2K, N], shared by every refit
    swapped = np.zeros(n, dtype=bool)

    for iteration in range(1, max_iterations + 1):
        weights = solver @ targets.reshape(n, -1)
        predicted = (xc @ weights).reshape(targets.shape)
        swapped_targets = targets[:, perm, :]
        error = np.linalg.norm(predicted - targets, axis=-1).mean(axis=1)
        swapped_error = np.linalg.norm(predicted - swapped_targets, axis=-1).mean(axis=1)
        prefer_swap = swapped_error < error
        count = int(prefer_swap.sum())
        if count <= min_swaps or iteration == max_iterations:
            break
        targets = np.where(prefer_swap[:, None, None], swapped_targets, targets)
        swapped ^= prefer_swap

    return H36MRegression(
        weights=weights,
        swapped=swapped,
        iterations=iteration,
        converged=count <= min_swaps,
        num_preferring_swap=count,
    )


# --------------------------------------------------------------------------------------------
# Dispatch by the protocol's regressor kind
# --------------------------------------------------------------------------------------------

REGRESSOR_KINDS: tuple[str, ...] = ("linear", "visible", "h36m")


def fit_regressor(
    kind: str,
    discovered: np.ndarray,
    annotations: np.ndarray,
    visibility: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit the regressor a dataset's protocol names (`DatasetProtocol.regressor`).

    Returns W [2K, 2J] and a JSON-able summary (kind, samples, and for "h36m" the swap loop's
    outcome), so every tool fits a dataset the same way. "visible" needs `visibility`.
    """
    info: dict[str, Any] = {"kind": kind, "num_samples": int(np.shape(discovered)[0])}
    if kind == "linear":
        return fit_linear_regressor(discovered, annotations), info
    if kind == "visible":
        if visibility is None:
            raise ValueError("the visible regressor needs a visibility array")
        return fit_linear_regressor_visible(discovered, annotations, visibility), info
    if kind == "h36m":
        fit = fit_linear_regressor_h36m(discovered, annotations)
        info.update(
            iterations=fit.iterations,
            converged=fit.converged,
            num_swapped=int(fit.swapped.sum()),
            num_preferring_swap=fit.num_preferring_swap,
        )
        return fit.weights, info
    raise ValueError(f"unknown regressor kind {kind!r}; choose one of {REGRESSOR_KINDS}")
