"""Tiny random bundles for the built-in ``tiny`` backbone, written in milliseconds.

Why: skp-node-bench (when given no bundle) and the node tests need a valid bundle without
training or downloads. The context is seeded random, not trained: it exercises the plumbing
(messages, stamps, lifecycle, QoS), not keypoint quality, and the tiny model's peaked
attention already gives distinct, deterministic keypoints. No ROS import: only skp_core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["make_tiny_bundle"]


def make_tiny_bundle(
    path: Path,
    *,
    num_landmarks: int = 0,
    seed: int = 0,
    context_dim: int | None = None,
    method_overrides: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle for `load_backbone("tiny")` at `path` and return the path.

    `num_landmarks` > 0 adds a random linear regressor (so the node publishes ~/landmarks); a
    `context_dim` different from the backbone's makes a mismatch; `method_overrides` replace
    method settings (e.g. ``{"num_views": 2}``).
    """
    import torch

    from skp_core.backbone import load_backbone
    from skp_core.bundle import Bundle, save_bundle
    from skp_core.config import default_config

    backbone = load_backbone("tiny")
    method = default_config("tiny").to_dict()
    method.update(method_overrides or {})
    generator = torch.Generator().manual_seed(seed)
    dim = backbone.context_dim if context_dim is None else context_dim
    context = torch.randn(method["num_tokens"], dim, generator=generator)
    k = int(method["top_k"])
    regressor = None
    landmark_names = None
    if num_landmarks:
        # Near-identity-like random map, kept small so landmarks stay near the image.
        regressor = 0.3 * torch.randn(2 * k, 2 * num_landmarks, generator=generator) / k
        landmark_names = [f"joint{j}" for j in range(num_landmarks)]
    bundle = Bundle(
        context=context,
        selected_indices=torch.arange(k, dtype=torch.int64),
        regressor=regressor,
        landmark_names=landmark_names,
        keypoint_names=[f"part_{i}" for i in range(k)],
        backbone={"model": "tiny", "fingerprint": backbone.fingerprint},
        method=method,
        training={"note": "random test bundle, not trained"},
    )
    return save_bundle(bundle, path)
