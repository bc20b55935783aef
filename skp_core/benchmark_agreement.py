"""How far the approximate latent-space views move keypoints from the exact image-space views.

Measured on real photos (scikit-image's sample images), for skp-bench's ``--latent-views``.
With random-weight models the keypoints mean nothing, but their agreement still shows how much
the approximation perturbs the maps; with real weights it is the figure to decide on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["PHOTOS", "latent_view_agreement"]

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def latent_view_agreement(
    backbone: Any, bundle: Any, num_views: int, max_batch: int | None = None
) -> dict[str, float]:
    """Median keypoint distance (pixels of a side-``image_size`` image) and share within 2%."""
    import skimage.data

    from skp_core.detector import KeypointDetector

    photos = [getattr(skimage.data, name)() for name in PHOTOS]
    found = {}
    for space in ("image", "latent"):
        detector = KeypointDetector(
            backbone, bundle, num_views=num_views, max_batch=max_batch, view_space=space
        )
        try:
            found[space] = np.stack([d.normalized for d in detector.detect(photos)])
        finally:
            detector.close()
    side = int(bundle.method.get("image_size", 512))
    distance = np.linalg.norm(found["image"] - found["latent"], axis=-1)  # normalized units
    return {
        "photos": len(photos),
        "keypoints": int(distance.size),
        "median_px": float(np.median(distance) * side),
        "within_2pct": float(np.mean(distance <= 0.02)),
    }
