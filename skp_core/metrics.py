"""Per-image keypoint errors and their dataset means (METHOD.md §6).

Every metric is computed per test image, then averaged over the test images. Inputs are
predictions and annotations [N, J, 2] in normalized (x, y) coordinates (docs/architecture.md)
and, where it matters, visibility [N, J] in {0, 1}.

Units. Each per-image function returns the value in the units METHOD.md's table defines it in:
  inter_eye_distance     fraction of the inter-ocular distance (raw ratio, NOT x100)
  visible                distance in [0, 1] image units (raw, NOT x100)
  mean_average_error     pixels at 256 x 256, summed over visible joints
  pck                    fraction of joints in [0, 1] (NOT x100)
  orientation_invariant  pixels at 128 x 128
The paper reports some of them as percentages; `MetricSpec.report_scale` (100 or 1) turns a
per-image value into the reported unit, and `evaluate` applies it. Images where a metric is
undefined (no visible joint, coincident eyes) get NaN and are left out of the mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from skp_core.regression import H36M_SWAP_PERMUTATION, swap_left_right

__all__ = [
    "DATASET_PROTOCOLS",
    "METRICS",
    "DatasetProtocol",
    "MetricSpec",
    "evaluate",
    "inter_eye_distance",
    "mean_average_error",
    "orientation_invariant",
    "pck",
    "visible",
]


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 [N, J, 2] copies of both arrays, checked to match."""
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.ndim != 3 or p.shape[-1] != 2 or p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} must both be [N, J, 2]")
    return p, g


def _visibility(vis: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """Visibility as float 0/1 [N, J]; None means every joint is visible (upstream's default)."""
    if vis is None:
        return np.ones(shape[:2])
    v = np.asarray(vis)
    if v.shape != shape[:2]:
        raise ValueError(f"visibility must be {shape[:2]}, got {v.shape}")
    return (v > 0).astype(np.float64)


def _joint_l2(pred: np.ndarray, gt: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Per-joint Euclidean error [N, J] after scaling both arrays to `scale` pixels."""
    return np.linalg.norm((pred - gt) * scale, axis=-1)


def _masked_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_j w_j v_j / sum_j w_j per row; NaN where no weight (no visible joint)."""
    total = weights.sum(axis=1)
    weighted = np.where(weights > 0, values, 0.0)  # invisible joints may hold NaN/garbage
    out = np.full(values.shape[0], np.nan)
    np.divide((weighted * weights).sum(axis=1), total, out=out, where=total > 0)
    return out


def inter_eye_distance(
    pred: np.ndarray, gt: np.ndarray, left_eye: int = 0, right_eye: int = 1
) -> np.ndarray:
    """Per image: mean_j L2_j / L2(gt left eye, gt right eye); raw ratio (reported x100).

    CelebA's protocol: errors in units of the annotated inter-ocular distance, so face size
    does not matter. NaN where the two annotated eyes coincide.
    """
    p, g = _pair(pred, gt)
    eye_distance = np.linalg.norm(g[:, left_eye] - g[:, right_eye], axis=-1)
    out = np.full(p.shape[0], np.nan)
    np.divide(_joint_l2(p, g).mean(axis=1), eye_distance, out=out, where=eye_distance > 0)
    return out


def visible(pred: np.ndarray, gt: np.ndarray, vis: np.ndarray | None = None) -> np.ndarray:
    """Per image: sum_j L2_j v_j / sum_j v_j in [0, 1] coordinates (CUB; reported x100).

    Images without any visible joint get NaN, which `evaluate` leaves out of the mean.
    """
    p, g = _pair(pred, gt)
    return _masked_mean(_joint_l2(p, g), _visibility(vis, p.shape))


def mean_average_error(
    pred: np.ndarray, gt: np.ndarray, vis: np.ndarray | None = None, scale: float = 256.0
) -> np.ndarray:
    """Per image: SUM over visible joints of L2, coordinates x256 (Tai-Chi).

    Despite the name this is a sum, not a mean, exactly as upstream computes it (that is why
    the published Tai-Chi number is in the hundreds). An image with no visible joint scores 0.
    """
    p, g = _pair(pred, gt)
    v = _visibility(vis, p.shape)
    return np.where(v > 0, _joint_l2(p, g, scale), 0.0).sum(axis=1)


def pck(
    pred: np.ndarray,
    gt: np.ndarray,
    threshold_px: float = 6.0,
    scale: float = 256.0,
    vis: np.ndarray | None = None,
) -> np.ndarray:
    """Per image: fraction of joints with L2 < threshold_px at `scale` px (DeepFashion, x100).

    Strictly below the threshold, as upstream. With `vis` the fraction is over visible joints
    only (NaN when there are none); upstream's DeepFashion protocol passes no visibility.
    """
    p, g = _pair(pred, gt)
    correct = (_joint_l2(p, g, scale) < threshold_px).astype(np.float64)
    return _masked_mean(correct, _visibility(vis, p.shape))


def orientation_invariant(
    pred: np.ndarray,
    gt: np.ndarray,
    permutation: np.ndarray | Sequence[int] = H36M_SWAP_PERMUTATION,
    scale: float = 128.0,
) -> np.ndarray:
    """Per image: min(mean_j L2, mean_j L2 of the left/right-swapped prediction) x128.

    Human3.6M: a person seen from behind has left and right exchanged in the image, which an
    unsupervised detector cannot know, so either labelling of the prediction is accepted.
    """
    p, g = _pair(pred, gt)
    direct = _joint_l2(p, g, scale).mean(axis=1)
    mirrored = _joint_l2(swap_left_right(p, permutation), g, scale).mean(axis=1)
    return np.minimum(direct, mirrored)


# --------------------------------------------------------------------------------------------
# Registry: metric name -> how to compute and report it; dataset -> protocol
# --------------------------------------------------------------------------------------------

PerImage = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]


@dataclass(frozen=True)
class MetricSpec:
    """How one named metric is computed and reported.

    per_image(pred, gt, vis) -> [N] in the function's own units (see the module docstring);
    multiply by report_scale for the unit the paper reports in.
    """

    name: str
    function: Callable[..., np.ndarray]
    per_image: PerImage
    report_scale: float
    lower_is_better: bool
    units: str


METRICS: dict[str, MetricSpec] = {
    "inter_eye_distance": MetricSpec(
        name="inter_eye_distance",
        function=inter_eye_distance,
        per_image=lambda pred, gt, vis: inter_eye_distance(pred, gt),
        report_scale=100.0,
        lower_is_better=True,
        units="% of the inter-ocular distance",
    ),
    "visible": MetricSpec(
        name="visible",
        function=visible,
        per_image=lambda pred, gt, vis: visible(pred, gt, vis),
        report_scale=100.0,
        lower_is_better=True,
        units="% of the image size, mean over visible joints",
    ),
    "mean_average_error": MetricSpec(
        name="mean_average_error",
        function=mean_average_error,
        per_image=lambda pred, gt, vis: mean_average_error(pred, gt, vis),
        report_scale=1.0,
        lower_is_better=True,
        units="pixels at 256x256, summed over visible joints",
    ),
    "pck": MetricSpec(
        name="pck",
        function=pck,
        # Upstream's DeepFashion evaluation ignores visibility: every joint counts.
        per_image=lambda pred, gt, vis: pck(pred, gt),
        report_scale=100.0,
        lower_is_better=False,
        units="% of joints within 6 px at 256x256",
    ),
    "orientation_invariant": MetricSpec(
        name="orientation_invariant",
        function=orientation_invariant,
        per_image=lambda pred, gt, vis: orientation_invariant(pred, gt),
        report_scale=1.0,
        lower_is_better=True,
        units="pixels at 128x128, best of the two left/right labellings",
    ),
}


@dataclass(frozen=True)
class DatasetProtocol:
    """Which metric and which regressor a dataset is evaluated with, and the paper's number.

    regressor: "linear" (`fit_linear_regressor`), "visible" (`fit_linear_regressor_visible`)
    or "h36m" (`fit_linear_regressor_h36m`), the choice upstream makes per metric.
    published: the StableKeypoints paper's result in the metric's reported unit, or None.
    """

    dataset: str
    metric: str
    regressor: str
    published: float | None
    note: str = ""

    @property
    def lower_is_better(self) -> bool:
        """Direction of improvement, from the metric."""
        return METRICS[self.metric].lower_is_better


DATASET_PROTOCOLS: dict[str, DatasetProtocol] = {
    protocol.dataset: protocol
    for protocol in (
        DatasetProtocol("celeba_aligned", "inter_eye_distance", "linear", 3.60, "K=10"),
        DatasetProtocol("celeba_wild", "inter_eye_distance", "linear", 4.35, "K=8"),
        DatasetProtocol("cub_aligned", "visible", "visible", 5.06),
        DatasetProtocol("cub_001", "visible", "visible", None),
        DatasetProtocol("cub_002", "visible", "visible", None),
        DatasetProtocol("cub_003", "visible", "visible", None),
        DatasetProtocol("cub_all", "visible", "visible", 5.4),
        DatasetProtocol("taichi", "mean_average_error", "visible", 234.89),
        DatasetProtocol("deepfashion", "pck", "linear", 70.0),
        DatasetProtocol("human3.6m", "orientation_invariant", "h36m", 4.45),
        DatasetProtocol("unaligned_human3.6m", "orientation_invariant", "h36m", None),
    )
}


def evaluate(
    dataset: str,
    pred: np.ndarray,
    gt: np.ndarray,
    vis: np.ndarray | None = None,
    *,
    swap_permutation: np.ndarray | Sequence[int] | None = None,
) -> dict[str, Any]:
    """Score test predictions with the dataset's protocol, in the paper's reported unit.

    Returns a dict with: dataset, metric, mean (over images with a defined value), per_image
    ([N], reported unit, NaN where undefined), num_images, num_valid, units, lower_is_better
    and published. `swap_permutation` overrides the Human3.6M left/right table.
    """
    if dataset not in DATASET_PROTOCOLS:
        raise KeyError(f"unknown dataset {dataset!r}; known: {sorted(DATASET_PROTOCOLS)}")
    protocol = DATASET_PROTOCOLS[dataset]
    spec = METRICS[protocol.metric]
    if spec.name == "orientation_invariant" and swap_permutation is not None:
        raw = orientation_invariant(pred, gt, swap_permutation)
    else:
        raw = spec.per_image(pred, gt, vis)
    per_image = raw * spec.report_scale
    valid = np.isfinite(per_image)
    num_valid = int(valid.sum())
    mean = float(per_image[valid].mean()) if num_valid else float("nan")
    return {
        "dataset": dataset,
        "metric": spec.name,
        "mean": mean,
        "per_image": per_image,
        "num_images": int(per_image.shape[0]),
        "num_valid": num_valid,
        "units": spec.units,
        "lower_is_better": spec.lower_is_better,
        "published": protocol.published,
    }
