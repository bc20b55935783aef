"""Tiny bundles for node tests: valid for the built-in `tiny` backbone, written in milliseconds.

The context is seeded random (not trained): the node tests check plumbing (messages, stamps,
lifecycle, QoS), not keypoint quality, and the tiny model's peaked attention already gives
distinct, deterministic keypoints. The one implementation lives in the product
(`skp_ros.node_benchmark`), since `skp-node-bench` writes the same bundle when given none.
"""

from __future__ import annotations

from skp_ros.node_benchmark import make_tiny_bundle

__all__ = ["make_tiny_bundle"]
