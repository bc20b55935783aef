"""Hyperparameters of the method with METHOD.md's defaults, and the tiny model's own defaults.

The SD 1.5 defaults are the reference code's. The built-in tiny model has random weights, so
its attention starts almost flat; it needs a larger learning rate and smaller images to show
the method working in seconds on a CPU. Those overrides apply only when asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

DEFAULT_CAPTURE_LAYERS: tuple[str, ...] = (
    "up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor",
    "up_blocks.1.attentions.1.transformer_blocks.0.attn2.processor",
    "up_blocks.1.attentions.2.transformer_blocks.0.attn2.processor",
    "up_blocks.2.attentions.0.transformer_blocks.0.attn2.processor",
)
"""The first four decoder cross-attention layers of SD 1.x (16x16 x3 and 32x32 native at 512 px),
spelled as keys of ``unet.attn_processors``. Here, not in attention_capture, so that settings
can be read and checked without importing diffusers."""

VIEW_SPACES = ("image", "latent")

MAX_NUM_VIEWS = 256
"""Test-time views per image. The reference uses 10; each view is a UNet pass and its warped-back
maps are held at once, so a count far beyond this is a typo or a corrupt file, not a setting."""
MAX_NUM_SUBJECTS = 64
"""Instances of the object per image. Each needs its own peak, at least 0.05 * H from the others
(the masking disc), so a 128-pixel map holds a few dozen at most."""
MAX_IMAGE_SIZE = 2048
"""SD 1.x is trained at 512 px; 4x that already needs tens of GB per UNet pass."""


def _integer(low: int, high: int | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {value!r}"
        if value < low or (high is not None and value > high):
            bound = f"at least {low}" if high is None else f"between {low} and {high}"
            return f"must be {bound}, got {value}"
        return None

    return check


def _number(
    low: float, high: float | None = None, *, open_low: bool = False
) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {value!r}"
        if not math.isfinite(value):
            return f"must be finite, got {value}"
        too_low = value <= low if open_low else value < low
        if too_low or (high is not None and value > high):
            lower = f"> {low}" if open_low else f">= {low}"
            bound = lower if high is None else f"{lower} and <= {high}"
            return f"must be {bound}, got {value}"
        return None

    return check


def _multiple_of_8(low: int, high: int) -> Callable[[Any], str | None]:
    in_range = _integer(low, high)

    def check(value: Any) -> str | None:
        problem = in_range(value)
        if problem is None and value % 8:
            problem = f"must be a multiple of 8 (the VAE's down-sampling), got {value}"
        return problem

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


def _view_space(value: Any) -> str | None:
    return None if value in VIEW_SPACES else f"must be one of {VIEW_SPACES}, got {value!r}"


def _top_k_strategy(value: Any) -> str | None:
    choices = ("gaussian", "entropy", "consistent")
    return None if value in choices else f"must be one of {choices}, got {value!r}"


def _max_loc_strategy(value: Any) -> str | None:
    choices = ("argmax", "subpixel", "weighted_avg")
    return None if value in choices else f"must be one of {choices}, got {value!r}"


def _max_loc_distance(value: Any) -> str | None:
    problem = _number(-1.0)(value)
    if problem is None and value < 0 and value != -1:
        problem = f"must be >= 0, or -1 for the whole map, got {value}"
    return problem


def _optional_sigma(value: Any) -> str | None:
    return None if value is None else _number(0.0, open_low=True)(value)


def _layers(value: Any) -> str | None:
    if not isinstance(value, list | tuple) or not value:
        return f"must be a non-empty list of layer names, got {value!r}"
    if not all(isinstance(v, str) and v for v in value):
        return f"must hold layer names (strings), got {list(value)!r}"
    if len(set(value)) != len(value):
        return f"must not repeat a layer, got {list(value)!r}"
    return None


FIELD_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "num_tokens": _integer(1, 100_000),
    "lr": _number(0.0, open_low=True),
    "steps": _integer(1),
    "images_per_step": _integer(1, 4096),
    "sigma": _number(0.0, open_low=True),
    "num_candidates": _integer(1),
    "top_k": _integer(1),
    "top_k_strategy": _top_k_strategy,
    "num_subjects": _integer(1, MAX_NUM_SUBJECTS),
    "equivariance_weight": _number(0.0),
    "localization_weight": _number(0.0),
    "rotation_deg": _number(0.0, 180.0),
    "scale_min": _number(0.0, 10.0, open_low=True),
    "scale_max": _number(0.0, 10.0, open_low=True),
    "translation": _number(0.0, 1.0),
    "image_size": _multiple_of_8(8, MAX_IMAGE_SIZE),
    "feature_resolution": _integer(1, MAX_IMAGE_SIZE),
    "layers": _layers,
    "selection_images": _integer(1),
    "selection_sigma": _optional_sigma,
    "num_views": _integer(1, MAX_NUM_VIEWS),
    "include_identity_view": _boolean,
    "view_space": _view_space,
    "max_loc_strategy": _max_loc_strategy,
    "max_loc_distance": _max_loc_distance,
    "seed": _integer(0, 2**63 - 1),
}
"""One check per setting: its type and the range in which it means something."""


def settings_problem(values: Mapping[str, Any]) -> str | None:
    """The first problem among the given settings (any subset), or None.

    Checks each field's type and range, and the relations among the fields given; training
    relations (top_k <= num_candidates <= num_tokens) only when both sides are given.
    """
    unknown = sorted(set(values) - set(FIELD_CHECKS))
    if unknown:
        return f"unknown settings: {', '.join(unknown)} (known: {', '.join(FIELD_CHECKS)})"
    for name, value in values.items():
        problem = FIELD_CHECKS[name](value)
        if problem is not None:
            return f"{name} {problem}"
    pairs = (("top_k", "num_candidates"), ("num_candidates", "num_tokens"))
    for small, large in pairs:
        if small in values and large in values and values[small] > values[large]:
            return f"{small} ({values[small]}) must not exceed {large} ({values[large]})"
    if "scale_min" in values and "scale_max" in values:
        if values["scale_min"] > values["scale_max"]:
            return (
                f"need scale_min <= scale_max, got {values['scale_min']} and {values['scale_max']}"
            )
    return None


@dataclass(frozen=True)
class MethodConfig:
    """Everything that decides what the optimization and inference compute."""

    num_tokens: int = 500
    lr: float = 5e-3
    steps: int = 500
    images_per_step: int = 4
    sigma: float = 2.0
    num_candidates: int = 25
    top_k: int = 10
    top_k_strategy: str = "gaussian"
    """Candidate ranking before FPS: gaussian (KL to a Gaussian, the reference's default),
    entropy (lowest spatial-softmax entropy) or consistent (the first tokens)."""
    num_subjects: int = 1
    """Instances of the object per image: the Gaussian targets have one peak per subject, and
    inference reads that many locations per keypoint, grouped into instances."""
    equivariance_weight: float = 1000.0
    localization_weight: float = 100.0
    rotation_deg: float = 15.0
    scale_min: float = 0.8
    scale_max: float = 1.0
    translation: float = 0.25
    image_size: int = 512
    feature_resolution: int = 128
    layers: tuple[str, ...] = DEFAULT_CAPTURE_LAYERS
    selection_images: int = 100
    selection_sigma: float | None = None
    """Gaussian sigma of the candidate ranking in token selection; None: ``sigma`` (the
    reference's main code; its notebook selects with 3 after optimizing with 1)."""
    num_views: int = 10
    include_identity_view: bool = False
    view_space: str = "image"
    """Test-time views warp the image (exact) or, encoded once, its latent (approximate)."""
    max_loc_strategy: str = "argmax"
    """Read-out of each view-averaged map: argmax (the protocol's), weighted_avg (the
    reference's centroid near the argmax) or subpixel (skp's log-parabola refinement)."""
    max_loc_distance: float = 5.0
    """weighted_avg: radius kept around the argmax, in pixels of a 512-pixel map; -1: all."""
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = list(self.layers)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MethodConfig:
        """Settings from JSON/YAML; wrong names, types or ranges raise ValueError."""
        problem = settings_problem(data)
        if problem is not None:
            raise ValueError(problem)
        values = dict(data)
        if "layers" in values:
            values["layers"] = tuple(values["layers"])
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> MethodConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def validate(self) -> None:
        """Raise ValueError naming the first setting that is wrong, and its value."""
        problem = settings_problem(self.to_dict())
        if problem is not None:
            raise ValueError(problem)


# What the tiny random-weight model needs to learn visibly in a CPU minute. Measured on the
# demo photos over these 60 steps (mean loss of the first -> last 10 steps): lr 5e-3 barely
# moves; 0.05 falls steadily 1.45 -> 0.78; 0.2 falls faster at first but climbs again at the end.
TINY_OVERRIDES: dict[str, Any] = {
    "num_tokens": 64,
    "lr": 0.05,
    "steps": 60,
    "image_size": 128,
    "feature_resolution": 32,
    "sigma": 1.0,
    "num_candidates": 16,
    "top_k": 6,
    "selection_images": 16,
    "num_views": 4,
}


PRESETS: dict[str, dict[str, Any]] = {
    # The authors' Colab notebook (StableKeypoints.ipynb), where many users start: few
    # tokens, one image per step, a sharp Gaussian for optimization and a wide one (its
    # find_best_indices default) for selection, milder augmentation.
    "colab": {
        "num_tokens": 100,
        "num_candidates": 10,
        "top_k": 10,
        "images_per_step": 1,
        "sigma": 1.0,
        "selection_sigma": 3.0,
        "equivariance_weight": 100.0,
        "localization_weight": 100.0,
        "rotation_deg": 30.0,
        "scale_min": 0.9,
        "scale_max": 1.1,
        "translation": 0.1,
    },
}
"""Named sets of method settings (skp-train --preset); explicit flags and YAML override them."""


def default_config(model: str) -> MethodConfig:
    """METHOD.md's defaults, or the tiny model's overrides for the built-in tiny model."""
    base = MethodConfig()
    return base.with_overrides(**TINY_OVERRIDES) if model == "tiny" else base
