"""Hyperparameters of the method with METHOD.md's defaults, and the tiny model's own defaults.

The SD 1.5 defaults are the reference code's. The built-in tiny model has random weights, so
its attention starts almost flat; it needs a larger learning rate and smaller images to show
the method working in seconds on a CPU. Those overrides apply only when asked for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from skp_core.attention_capture import DEFAULT_CAPTURE_LAYERS

VIEW_SPACES = ("image", "latent")


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
    num_views: int = 10
    include_identity_view: bool = False
    view_space: str = "image"
    """Test-time views warp the image (exact) or, encoded once, its latent (approximate)."""
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = list(self.layers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MethodConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown method settings: {', '.join(unknown)}")
        values = dict(data)
        if "layers" in values:
            values["layers"] = tuple(values["layers"])
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> MethodConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def validate(self) -> None:
        if self.top_k > self.num_candidates:
            raise ValueError(
                f"top_k ({self.top_k}) must not exceed num_candidates ({self.num_candidates})"
            )
        if self.num_candidates > self.num_tokens:
            raise ValueError(
                f"num_candidates ({self.num_candidates}) must not exceed num_tokens "
                f"({self.num_tokens})"
            )
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(
                f"need 0 < scale_min <= scale_max, got {self.scale_min} and {self.scale_max}"
            )
        if self.view_space not in VIEW_SPACES:
            raise ValueError(f"view_space must be one of {VIEW_SPACES}, got {self.view_space!r}")
        for name in ("steps", "images_per_step", "num_tokens", "image_size", "num_views"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


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


def default_config(model: str) -> MethodConfig:
    """METHOD.md's defaults, or the tiny model's overrides for the built-in tiny model."""
    base = MethodConfig()
    return base.with_overrides(**TINY_OVERRIDES) if model == "tiny" else base
