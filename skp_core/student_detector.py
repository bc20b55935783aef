"""The student engine: a distilled bundle's ONNX network through onnxruntime, no diffusion.

Same interface as :class:`skp_core.detector.KeypointDetector` where the node and the protocol
use it (``detect``, ``locate``, ``num_keypoints``, ``close``), and the same
:class:`~skp_core.detector.Detection` results, so the topics, smoothing and regressor do not
care which engine made a keypoint. Images are resized to the student's square input (aspect
ignored, as the teacher does) and normalized as its JSON says.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from skp_core.bundle import Bundle, load_bundle
from skp_core.detector import (
    Detection,
    ImageLike,
    make_detection,
    make_instance,
    to_image_tensor,
)
from skp_core.image_batch import resize_images, stack_resized
from skp_core.student_bundle import INPUT_NAME, StudentFiles, load_student

__all__ = ["StudentDetector", "execution_providers"]


def execution_providers(device: str) -> list[str]:
    """onnxruntime providers for a device name: CUDA first where asked, the CPU always last."""
    if device.startswith("cuda"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class StudentDetector:
    """Keypoints of a bundle's distilled student, one onnxruntime call per batch."""

    num_views = 0  # the student sees each frame once
    readout = "soft-argmax"

    def __init__(
        self, bundle: Bundle, student: StudentFiles, device: str = "cpu", threads: int = 0
    ) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            student.onnx_bytes, options, providers=execution_providers(device)
        )
        self.providers = list(self.session.get_providers())
        self.bundle = bundle
        self.student = student
        self.config = student.config
        self.mean = torch.tensor(self.config.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(self.config.std).view(1, 3, 1, 1)
        self.regressor = None if bundle.regressor is None else bundle.regressor.double().numpy()

    @classmethod
    def from_bundle(cls, bundle_path: str | Path, device: str = "cpu") -> StudentDetector:
        bundle = load_bundle(bundle_path)
        return cls(bundle, load_student(bundle_path, bundle), device=device)

    @property
    def num_keypoints(self) -> int:
        return self.config.num_keypoints

    def run(self, batch: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(locations [B, K, 2], scores [B, K], maps [B, K, h, w]) of a batch in [0, 1]."""
        images = resize_images(batch.float().cpu(), self.config.input_size)
        feed = ((images - self.mean) / self.std).numpy().astype(np.float32)
        locations, scores, maps = self.session.run(None, {INPUT_NAME: feed})
        return locations, scores, maps

    def locate(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """Locations [B, K, 2] and scores [B, K] of a batch [B, 3, H, W] (the protocol's)."""
        locations, scores, _ = self.run(batch)
        return torch.from_numpy(locations), torch.from_numpy(scores)

    def detect(
        self, images: Sequence[ImageLike] | ImageLike, return_maps: bool = False
    ) -> list[Detection]:
        """Keypoints for one image or a list of images of any sizes."""
        if isinstance(images, np.ndarray | Tensor) and images.ndim == 3:
            images = [images]
        tensors = [to_image_tensor(image) for image in images]
        if not tensors:
            return []
        size = self.config.input_size
        batch = stack_resized(tensors, size, torch.device("cpu"))
        locations, scores, maps = self.run(batch)
        out = []
        for i, tensor in enumerate(tensors):
            height, width = int(tensor.shape[1]), int(tensor.shape[2])
            normalized = locations[i].astype(np.float64)
            score = scores[i].astype(np.float64)
            instance = make_instance(normalized, score, height, width, self.regressor)
            degenerate = ~np.isfinite(normalized).all(axis=-1) | ~np.isfinite(score)
            det = make_detection([instance], (height, width), degenerate)
            if return_maps:
                det.maps = maps[i]
            out.append(det)
        return out

    def close(self) -> None:
        """Nothing to undo: the session holds no hooks in another model."""
