"""Keypoint inference (METHOD §5): a bundle + a backbone -> keypoints for any image.

All test-time-augmentation views of a batch run through the UNet as batched passes (chunked by
`max_batch`); only the selected tokens' maps are computed, then warped back, averaged, and
read out. `view_space="latent"` (an approximation, off by default) encodes each image once and
warps its latent per view instead of encoding every warped view. Views are re-drawn from the
same seed on every call, so the same image always gives the same keypoints, and a static camera
gives static keypoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from skp_core.attention_capture import layer_problem
from skp_core.attention_maps import AttentionMapper
from skp_core.backbone import Backbone, load_backbone
from skp_core.bundle import Bundle, BundleError, check_compatible, load_bundle
from skp_core.config import DEFAULT_CAPTURE_LAYERS, settings_problem
from skp_core.image_batch import resize_images, stack_resized
from skp_core.instances import read_instances
from skp_core.latents import add_noise_t0, draw_noise
from skp_core.readout import READOUTS, degenerate_maps, read_keypoints
from skp_core.regression import apply_regressor
from skp_core.view_averaging import average_views, view_transforms, warp_views

ImageLike = np.ndarray | Tensor


@dataclass
class Instance:
    """The keypoints of one instance of the object (one subject) in an image."""

    normalized: np.ndarray  # [K, 2]
    pixels: np.ndarray  # [K, 2]
    scores: np.ndarray  # [K]: the map's value at this instance's peak
    landmarks_normalized: np.ndarray | None = None  # [J, 2] when the bundle has a regressor
    landmarks_pixels: np.ndarray | None = None


@dataclass
class Detection:
    """Keypoints of one image.

    `pixels` are continuous (u, v) coordinates of the input image with the centre of pixel
    (row i, col j) at (j, i), as OpenCV and ROS image_geometry use; `normalized` are (x, y) in
    [0, 1] with the pixel-centre convention of the method. With several subjects
    (``num_subjects`` n > 1) `instances` holds n instances, numbered left to right; the
    top-level keypoints are then the first instance's. With one subject `instances` holds
    the top-level keypoints alone.
    """

    normalized: np.ndarray  # [K, 2]
    pixels: np.ndarray  # [K, 2]
    scores: np.ndarray  # [K]
    image_size: tuple[int, int]  # (height, width) of the input image
    landmarks_normalized: np.ndarray | None = None  # [J, 2] when the bundle has a regressor
    landmarks_pixels: np.ndarray | None = None
    maps: np.ndarray | None = None  # [K, S, S] view-averaged maps, when asked for
    degenerate: np.ndarray | None = None  # [K] bool: map flat or not finite, no real peak
    instances: list[Instance] = field(default_factory=list)


def normalized_to_pixels(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """(x, y) in [0, 1] (pixel-centre convention) -> (u, v) pixel coordinates."""
    return points * np.array([width, height], dtype=np.float64) - 0.5


def make_instance(
    normalized: np.ndarray,
    scores: np.ndarray,
    height: int,
    width: int,
    regressor: np.ndarray | None,
) -> Instance:
    """One instance's keypoints in the input image's pixels, with its landmarks if any."""
    instance = Instance(
        normalized=normalized,
        pixels=normalized_to_pixels(normalized, height, width),
        scores=scores,
    )
    if regressor is not None:
        landmarks = apply_regressor(regressor, normalized[None])[0]
        instance.landmarks_normalized = landmarks
        instance.landmarks_pixels = normalized_to_pixels(landmarks, height, width)
    return instance


def make_detection(
    instances: list[Instance], image_size: tuple[int, int], degenerate: np.ndarray
) -> Detection:
    """A frame's detection: the first instance's keypoints at the top, all of them listed."""
    first = instances[0]
    return Detection(
        normalized=first.normalized,
        pixels=first.pixels,
        scores=first.scores,
        image_size=image_size,
        landmarks_normalized=first.landmarks_normalized,
        landmarks_pixels=first.landmarks_pixels,
        degenerate=degenerate,
        instances=instances,
    )


def to_image_tensor(image: ImageLike) -> Tensor:
    """uint8 HxWx3 (or HxW) array, or float [3, H, W] tensor in [0, 1] -> float [3, H, W]."""
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image tensors must be [3, H, W], got {tuple(image.shape)}")
        return image.float()
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
        raise ValueError(f"images must be HxWx3 arrays, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, got {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1).float() / 255


class KeypointDetector:
    """Detects a bundle's keypoints with augmentation-averaged attention maps."""

    def __init__(
        self,
        backbone: Backbone,
        bundle: Bundle,
        *,
        num_views: int | None = None,
        include_identity: bool | None = None,
        max_batch: int | None = None,
        readout: str | None = None,
        map_size: int | None = None,
        seed: int = 0,
        view_space: str | None = None,
        map_dtype: torch.dtype | None = None,
        num_subjects: int | None = None,
    ) -> None:
        check_compatible(bundle, backbone.context_dim, backbone.fingerprint)
        readout = readout or bundle.method.get("max_loc_strategy", "argmax")
        if readout not in READOUTS:
            raise ValueError(f"unknown read-out {readout!r}; choose one of {READOUTS}")
        method = bundle.method
        self.backbone = backbone
        self.bundle = bundle
        self.num_views = num_views or method.get("num_views", 10)
        self.include_identity = (
            method.get("include_identity_view", False)
            if include_identity is None
            else include_identity
        )
        self.view_space = view_space or method.get("view_space", "image")
        self.num_subjects = num_subjects or method.get("num_subjects", 1)
        problem = settings_problem(
            {
                "num_views": self.num_views,
                "include_identity_view": self.include_identity,
                "view_space": self.view_space,
                "num_subjects": self.num_subjects,
            }
        )
        if problem is not None:
            raise ValueError(problem)
        self.readout = readout
        self.max_loc_distance = float(method.get("max_loc_distance", 5.0))
        self.seed = seed
        image_size = int(method.get("image_size", 512))
        self.map_size = int(map_size or image_size)
        self.augmentation = {
            "rotation_deg": float(method.get("rotation_deg", 15.0)),
            "scale_range": (
                float(method.get("scale_min", 0.8)),
                float(method.get("scale_max", 1.0)),
            ),
            "translation": float(method.get("translation", 0.25)),
        }
        layers = tuple(method.get("layers") or DEFAULT_CAPTURE_LAYERS)
        problem = layer_problem(backbone.unet, layers)
        if problem is not None:
            raise BundleError(f"method.layers: {problem}")
        self.mapper = AttentionMapper(
            backbone,
            feature_resolution=int(method.get("feature_resolution", 128)),
            image_size=image_size,
            max_batch=max_batch,
            map_dtype=map_dtype,
            layers=layers,
        )
        self.context = bundle.context.to(backbone.device)
        self.selected = bundle.selected_indices.to(backbone.device)
        self.regressor = None if bundle.regressor is None else bundle.regressor.double().numpy()

    @classmethod
    def from_bundle(
        cls,
        bundle_path: str | Path,
        model: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        **kwargs,
    ) -> KeypointDetector:
        """Load the bundle, then the backbone it names (or `model`), and check they match."""
        bundle = load_bundle(bundle_path)
        name = model or bundle.backbone.get("model")
        if not name:
            raise ValueError(f"bundle {bundle_path} names no backbone model; pass model=...")
        backbone = load_backbone(name, device=device, dtype=dtype)
        return cls(backbone, bundle, **kwargs)

    @property
    def num_keypoints(self) -> int:
        return int(self.selected.shape[0])

    @torch.no_grad()
    def keypoint_maps(self, images: Tensor) -> Tensor:
        """View-averaged maps [B, K, S, S] of a batch [B, 3, H, W] in [0, 1].

        Every image gets the same views and the same noise, drawn from the seed on each call:
        an image's keypoints never depend on the rest of its batch or on earlier calls.
        """
        generator = torch.Generator().manual_seed(self.seed)
        device = self.backbone.device
        batch = resize_images(images.to(device), self.mapper.image_size)
        count = batch.shape[0]
        views = view_transforms(
            1,
            self.num_views,
            generator,
            include_identity=self.include_identity,
            device=device,
            **self.augmentation,
        )
        thetas = views.expand(count, -1, -1, -1)
        if self.view_space == "latent":
            # Approximate: one VAE pass per image; the views warp its latent (zero padding is
            # a zero latent, not the latent of a black border).
            z = warp_views(self.mapper.latents(batch), thetas)
        else:
            z = self.mapper.latents(warp_views(batch, thetas))
        eps = draw_noise((self.num_views, *z.shape[1:]), generator, z)
        z_t = add_noise_t0(z, eps.repeat(count, 1, 1, 1))
        selected = self.mapper.maps_from_latents(z_t, self.context, tokens=self.selected)
        return average_views(selected, thetas, self.map_size)

    def read(self, maps: Tensor) -> tuple[Tensor, Tensor]:
        """Locations [..., 2] and scores [...] of view-averaged maps, by this read-out.

        One location per keypoint, whatever ``num_subjects`` (the evaluation protocol's).
        """
        return read_keypoints(maps, self.readout, self.max_loc_distance)

    def read_instances(self, maps: Tensor) -> tuple[Tensor, Tensor]:
        """Locations [B, n, K, 2] and scores [B, n, K] of maps [B, K, S, S], per instance."""
        return read_instances(maps, self.num_subjects, self.readout, self.max_loc_distance)

    def detect(
        self, images: Sequence[ImageLike] | ImageLike, return_maps: bool = False
    ) -> list[Detection]:
        """Keypoints for one image or a list of images of any sizes."""
        if isinstance(images, np.ndarray | Tensor) and images.ndim == 3:
            images = [images]
        tensors = [to_image_tensor(image) for image in images]
        sizes = [(int(t.shape[1]), int(t.shape[2])) for t in tensors]
        batch = stack_resized(tensors, self.mapper.image_size, self.backbone.device)
        maps = self.keypoint_maps(batch)
        locations, scores = self.read_instances(maps)
        degenerate = degenerate_maps(maps).cpu().numpy()
        locations = locations.double().cpu().numpy()
        scores = scores.double().cpu().numpy()
        out = []
        for i, (height, width) in enumerate(sizes):
            instances = [
                make_instance(locations[i, n], scores[i, n], height, width, self.regressor)
                for n in range(locations.shape[1])
            ]
            det = make_detection(instances, (height, width), degenerate[i])
            if return_maps:
                det.maps = maps[i].float().cpu().numpy()
            out.append(det)
        return out

    def close(self) -> None:
        """Put the UNet's own attention processors back."""
        self.mapper.remove()
