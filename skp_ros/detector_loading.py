"""Loading the node's detector at configure: device, bundle, backbone, warm-up.

Each step fails with its own one-line :class:`ConfigureError` (missing bundle, missing weights,
a bundle that does not fit the backbone, an absent CUDA device), which the node turns into a
failed lifecycle transition instead of a crash. ``device: auto`` takes CUDA when it is there and
otherwise the CPU with a warning (returned, so the node also puts it in its diagnostics); an
explicit ``cuda`` that is absent fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from skp_ros.parameters import NodeSettings

__all__ = ["ConfigureError", "LoadedDetector", "load_detector", "resolve_device"]


class ConfigureError(RuntimeError):
    """configure cannot succeed; the message says why and what to change."""


@dataclass
class LoadedDetector:
    """What configure loaded: the detector, its bundle and where it runs."""

    detector: Any  # skp_core.detector.KeypointDetector (imported lazily: torch is heavy)
    bundle: Any
    model_id: str
    device: str
    dtype: str
    device_warning: str  # non-empty when device auto fell back to the CPU


def resolve_device(device: str, dtype: str) -> tuple[str, str, str]:
    """(device, dtype, warning) to load on; ConfigureError for an explicit absent CUDA."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda", dtype, ""
        warning = (
            "device auto: no CUDA device (no GPU, no driver, or a CPU-only torch build), "
            "running on the CPU (expect much slower processing)"
        )
        return "cpu", "float32", warning
    if not device.startswith("cuda"):
        return device, dtype, ""
    index = int(device.partition(":")[2] or 0)
    if not torch.cuda.is_available():
        why = "CUDA is not available (no GPU, no driver, or a CPU-only torch build)"
    elif index >= torch.cuda.device_count():
        why = f"only {torch.cuda.device_count()} CUDA device(s) exist"
    else:
        return device, dtype, ""
    raise ConfigureError(
        f"device {device!r} was requested but {why}; set device:=cpu, or device:=auto to use "
        f"CUDA when present and the CPU otherwise"
    )


def load_detector(settings: NodeSettings) -> LoadedDetector:
    """Bundle, then backbone, then detector, then one warm-up frame, each failing clearly."""
    from skp_core.backbone import BackboneError, load_backbone
    from skp_core.bundle import BundleError, load_bundle
    from skp_core.detector import KeypointDetector

    if not settings.bundle:
        raise ConfigureError(
            "parameter 'bundle' is empty: set it to the bundle directory written by skp-train"
        )
    device, dtype, warning = resolve_device(settings.device, settings.dtype)
    try:
        bundle = load_bundle(settings.bundle)
    except BundleError as exc:
        raise ConfigureError(f"cannot load the bundle: {exc}") from None
    model = settings.model or bundle.backbone.get("model")
    if not model:
        raise ConfigureError(
            f"bundle {settings.bundle} names no backbone: set the 'model' parameter"
        )
    # The built-in random models are identified by their seed; use the bundle's.
    fingerprint = bundle.backbone.get("fingerprint") or {}
    seed = fingerprint.get("seed")
    backbone_seed = seed if isinstance(seed, int) and not settings.model else 0
    try:
        backbone = load_backbone(
            model,
            device=device,
            dtype=dtype,
            seed=backbone_seed,
            allow_download=settings.allow_download,
        )
    except BackboneError as exc:
        raise ConfigureError(f"cannot load the backbone {model!r}: {exc}") from None
    try:
        detector = KeypointDetector(
            backbone,
            bundle,
            num_views=settings.num_views or None,
            include_identity=settings.include_identity_view,
            view_space=settings.view_space or None,
            max_batch=settings.max_batch or None,
            readout=None if settings.readout == "bundle" else settings.readout,
            seed=settings.seed,
            num_subjects=settings.num_subjects or None,
        )
    except BundleError as exc:
        raise ConfigureError(
            f"bundle {settings.bundle} does not fit backbone {model!r}: {exc}"
        ) from None
    except ValueError as exc:
        raise ConfigureError(f"cannot build the detector: {exc}") from None
    try:
        # One small warm-up frame: CUDA, memory and dtype problems fail configure now,
        # and the first real frame is not slowed down by lazy initialisation.
        detector.detect(np.full((64, 64, 3), 127, dtype=np.uint8))
    except Exception as exc:
        detector.close()
        raise ConfigureError(
            f"warm-up inference on {device}/{dtype} failed: {type(exc).__name__}: {exc}"
        ) from None
    return LoadedDetector(detector, bundle, str(model), device, dtype, warning)
