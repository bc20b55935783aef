"""What every benchmark dataset shares: the item format, image reading, errors and crops.

Why one base class: `skp-train` optimizes, regresses and evaluates on seven dataset families
with different on-disk layouts (METHOD.md §7). Each family module only turns its layout into
`Sample`s (an RGB image, keypoints in that image, visibility); this module turns a `Sample`
into the one item format the pipeline consumes, so resizing, dtype, coordinate conventions and
seeding are decided in one place.

Item (a dict), for every dataset:
  image       float32 [3, S, S] in [0, 1], RGB, resized to S x S ignoring the aspect ratio
              (as upstream), S = `image_size`.
  keypoints   float32 [J, 2], normalized (x, y) in the final image (docs/architecture.md:
              x right, y down, pixel (row i, col j) centred at ((j + .5) / W, (i + .5) / H)).
              Absent when the split carries no annotations (Tai-Chi train, custom).
  visibility  float32 [J], 1 visible / 0 not (all ones when the dataset has no visibility);
              absent with `keypoints`. Invisible keypoints hold (0.5, 0.5): neutral after the
              regressor's centring and never scored.
  index       int, the item index.
  path        str, the image file (or `file.h5#dataset[i]` for images stored in HDF5).

Pixel-coordinate convention: annotation files that give pixel positions are read as 0-based
pixel indices (integer = the centre of that pixel), so a position p in an image W wide becomes
(p + 0.5) / W; 1-based files subtract 1 first. Upstream divides by W without the half pixel;
the difference is a constant 0.5 px shared by the regression and test annotations.

Randomness: augmentation happens only on the "train" split with `augment=True`, drawing from
`numpy.random.default_rng([seed, epoch, index])`. Each item is reproducible from (seed, epoch,
index) alone, whatever the DataLoader worker order; `set_epoch` changes the draws per epoch.
The "regression" and "test" splits are always deterministic.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from skp_core.image_header import PixelLimitError, check_pixel_limit

__all__ = [
    "IMAGE_EXTENSIONS",
    "METRICS",
    "SPLITS",
    "DatasetError",
    "KeypointDataset",
    "Sample",
    "crop_with_fill",
    "expect_dir",
    "expect_file",
    "find_images",
    "mirror_keypoints",
    "pixels_to_normalized",
    "read_image",
    "to_rgb",
]

SPLITS: tuple[str, ...] = ("train", "regression", "test")
METRICS: tuple[str, ...] = (
    "inter_eye_distance",
    "visible",
    "mean_average_error",
    "pck",
    "orientation_invariant",
)
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Invisible keypoints get this coordinate: 0 after the regressor subtracts 0.5.
_NEUTRAL = 0.5


class DatasetError(Exception):
    """A dataset is missing, incomplete or unreadable on disk; the message names the path."""


def expect_file(path: Path, dataset: str, what: str) -> Path:
    """Return `path` if it is a file, else raise a DatasetError naming the expected location."""
    if not path.is_file():
        raise DatasetError(f"{dataset}: missing {what}: expected a file at {path}")
    return path


def expect_dir(path: Path, dataset: str, what: str) -> Path:
    """Return `path` if it is a folder, else raise a DatasetError naming the expected location."""
    if not path.is_dir():
        raise DatasetError(f"{dataset}: missing {what}: expected a folder at {path}")
    return path


def find_images(folder: Path) -> list[Path]:
    """Every image file under `folder`, recursively, sorted by relative path (deterministic).

    Hidden files and folders (".git", ".DS_Store", editor swap files) are skipped; the
    extension test ignores case.
    """
    found: list[Path] = []
    for dirpath, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(
            Path(dirpath) / name
            for name in files
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS
        )
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB view of any PIL mode, so every loader hands the model the same 3 channels.

    Grayscale, palette and CMYK go through PIL's converter; 16-bit and float grayscale are
    scaled to 0..255 (PIL would clip them); transparent images are composited over white, the
    usual background of cut-out photos.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def read_image(path: Path, dataset: str, what: str = "image") -> Image.Image:
    """Decode an image file to RGB with its EXIF orientation applied.

    Raises DatasetError naming `path` when the file is missing or cannot be decoded, so a
    broken download points at the file instead of failing deep inside a DataLoader worker.
    """
    expect_file(path, dataset, what)
    try:
        check_pixel_limit(path)
        with Image.open(path) as handle:
            handle.load()
            image = ImageOps.exif_transpose(handle)
            if image is handle:
                image = handle.copy()
    except (PixelLimitError, Image.DecompressionBombError) as error:
        raise DatasetError(f"{dataset}: refused {what} {path}: {error}") from error
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise DatasetError(f"{dataset}: cannot decode {what} {path}: {error}") from error
    return to_rgb(image)


def image_file_size(path: Path, dataset: str, what: str = "image") -> tuple[int, int]:
    """(width, height) from the file's header, without decoding; DatasetError if unreadable."""
    try:
        size = check_pixel_limit(path)
        if size is None:
            with Image.open(path) as handle:
                size = handle.size
    except PixelLimitError as error:
        raise DatasetError(f"{dataset}: refused {what} {path}: {error}") from error
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise DatasetError(f"{dataset}: cannot read the size of {what} {path}: {error}") from error
    return size


def pixels_to_normalized(
    points: np.ndarray, width: float, height: float, *, one_based: bool = False
) -> np.ndarray:
    """Pixel-index (x, y) positions [..., 2] -> normalized pixel-centre coordinates.

    0-based index p (the centre of pixel p) maps to (p + 0.5) / size; `one_based` files (MATLAB,
    CUB) subtract 1 first.
    """
    pts = np.asarray(points, dtype=np.float64)
    offset = 0.5 - (1.0 if one_based else 0.0)
    return (pts + offset) / np.array([width, height], dtype=np.float64)


def mirror_keypoints(
    keypoints: np.ndarray, visibility: np.ndarray, permutation: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of the horizontally mirrored image: x -> 1 - x, then relabel left <-> right.

    After a mirror the point annotated "left eye" sits where a right eye would be, so slot i
    takes the mirrored point of slot permutation[i] (visibility moves with it). Mirroring
    twice is the identity when `permutation` is an involution.
    """
    perm = np.asarray(permutation, dtype=np.int64)
    kp = np.asarray(keypoints, dtype=np.float64).copy()
    kp[:, 0] = 1.0 - kp[:, 0]
    return kp[perm], np.asarray(visibility)[perm].copy()


@dataclass
class Sample:
    """One decoded example before resizing: what a family module produces.

    keypoints are normalized (x, y) in `image`; `mask` (optional, same size as the image,
    values in [0, 1]) multiplies the image after resizing (Human3.6M background removal).
    """

    image: Image.Image
    path: str
    keypoints: np.ndarray | None = None
    visibility: np.ndarray | None = None
    mask: np.ndarray | None = None


class KeypointDataset(Dataset):
    """Base of every benchmark dataset: split handling, seeding and the item format.

    Subclasses set the class attributes, fill `self._build()` (called once from __init__,
    returns the number of items) and `self._load(index, rng)` (returns a Sample; `rng` is None
    unless this item is augmented).
    """

    default_name: ClassVar[str] = ""
    landmark_names: ClassVar[list[str]] = []
    num_landmarks: ClassVar[int] = 0
    metric: ClassVar[str | None] = None
    # Left/right relabelling after a horizontal mirror (an involution), where defined.
    flip_permutation: ClassVar[tuple[int, ...] | None] = None
    # Has the reference's held-out validation split (``validation=True``).
    has_validation_split: ClassVar[bool] = False

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        *,
        image_size: int = 512,
        seed: int = 0,
        augment: bool = False,
        allow_pickle: bool = False,
        name: str | None = None,
        validation: bool = False,
    ) -> None:
        if validation and not self.has_validation_split:
            raise DatasetError(
                f"{name or self.default_name}: has no validation split (the reference code's "
                f"--validation exists for human3.6m only)"
            )
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if int(image_size) < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0 (numpy seed material), got {seed}")
        self.name: str = name or self.default_name
        self.root = Path(root).expanduser()
        self.split = split
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.augment = bool(augment)
        self.allow_pickle = bool(allow_pickle)
        self.validation = bool(validation)
        self.epoch = 0
        self.has_keypoints = True
        expect_dir(self.root, self.name, "dataset root")
        self._length = int(self._build())

    # --- to implement -------------------------------------------------------------------
    def _build(self) -> int:
        """Index the split on disk; return the number of items."""
        raise NotImplementedError

    def _load(self, index: int, rng: np.random.Generator | None) -> Sample:
        """Decode item `index`; `rng` is given only when the item is to be augmented."""
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------
    @property
    def augmenting(self) -> bool:
        """True when items are randomly augmented: only the train split, only on request."""
        return self.augment and self.split == "train"

    def set_epoch(self, epoch: int) -> None:
        """Select another set of augmentation draws (reproducible per (seed, epoch, index))."""
        self.epoch = int(epoch)

    def item_rng(self, index: int) -> np.random.Generator | None:
        """The generator of one item's augmentation, or None when not augmenting."""
        if not self.augmenting:
            return None
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"{self.name}: index {index} out of range for {self._length} items")
        sample = self._load(index, self.item_rng(index))
        width, height = sample.image.size
        item: dict[str, Any] = {
            "image": self._to_tensor(sample),
            "index": index,
            "path": sample.path,
            "original_size": torch.tensor([height, width]),  # (H, W) before the square resize
        }
        if sample.keypoints is not None:
            kp = np.asarray(sample.keypoints, dtype=np.float64).reshape(-1, 2)
            if sample.visibility is None:
                vis = np.ones(len(kp))
            else:
                vis = (np.asarray(sample.visibility, dtype=np.float64).reshape(-1) > 0) * 1.0
            kp = np.where(vis[:, None] > 0, kp, _NEUTRAL)
            if not np.isfinite(kp).all():
                raise DatasetError(f"{self.name}: non-finite keypoint in {sample.path}")
            item["keypoints"] = torch.from_numpy(kp.astype(np.float32))
            item["visibility"] = torch.from_numpy(vis.astype(np.float32))
        return item

    def _to_tensor(self, sample: Sample) -> torch.Tensor:
        """Resize (bilinear, aspect ignored), scale to [0, 1], apply the mask, go CHW."""
        size = (self.image_size, self.image_size)
        image = (
            sample.image
            if sample.image.size == size
            else sample.image.resize(size, Image.Resampling.BILINEAR)
        )
        array = np.asarray(image, dtype=np.float32) / 255.0
        if sample.mask is not None:
            mask = Image.fromarray(np.asarray(sample.mask, dtype=np.float32))
            if mask.size != size:
                mask = mask.resize(size, Image.Resampling.BILINEAR)
            array = array * np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)[..., None]
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, "
            f"items={self._length}, root={str(self.root)!r})"
        )


def crop_with_fill(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """Crop pixels [x0, x1) x [y0, y1); parts outside the image come out black (PIL's fill)."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty crop box {box}")
    return image.crop((x0, y0, x1, y1))
