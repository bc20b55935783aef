"""Human3.6M: the simplified aligned release (`human3.6m`) and raw frames (`unaligned_human3.6m`).

Both use actions Directions, Discussion, Posing, Waiting, Greeting, Walking (a folder is used
when its name starts with one of them, as upstream: "Walking" therefore also takes
"WalkingDog"); "train" and "regression" = subjects S1, S5, S6, S7, S8, S9; "test" = S11
(human3.6m with ``validation``, the reference's --validation: S1, S5, S6, S7, S8 / S9). Files
are listed in sorted order (upstream: os.listdir order), so every split is deterministic.

human3.6m layout (Zhang et al.'s simplified release), under the dataset root:
  S{n}/WithBackground/<action folder>/<frame>.jpg    the frames
  S{n}/BackgroudMask/<action folder>/<frame>.png     foreground mask (sic: "Backgroud")
  S{n}/Landmarks/<action folder>/<frame>.mat         `keypoints_2d`, 32 joints
The image is multiplied by the mask (background -> black), both resized bilinearly.

unaligned_human3.6m layout (h36m-fetch style), under the dataset root:
  S{n}/<action folder>/imageSequence/<camera>/img_NNNNNN.jpg
  S{n}/<action folder>/annot.h5     datasets camera [N], frame [N], pose/2d [N, 32, 2]
Each frame is cropped around its 2D pose box: a square of the box's longer side centred on
the box, plus a 100 px margin per side (reduced to fit the image, clipped at its borders),
then resized (aspect ignored). Upstream moves that crop by a random +-100 px on every split,
which makes test numbers unrepeatable; here the crop is centred, and only the train split
with augment=True is jittered (uniform integer in [-100, 100) per axis, seeded).

Assumptions (beyond METHOD.md):
- keypoints_2d holds (x, y) per joint, [32, 2] (a [2, 32] array is transposed). Upstream's
  regressor centres annotations at 0.5, so the release stores normalized [0, 1] coordinates;
  those are used as they are. Values beyond 2 are taken as 0-based pixels of the frame and
  normalized as (p + 0.5) / size.
- Masks are single-channel 0/1 (upstream multiplies by the raw values); 0/255 masks are
  scaled to 0/1, a colour mask uses its first channel.
- annot.h5: frame numbers match the NNNNNN of the file name and camera the camera folder
  name (as upstream asserts); pose/2d is in 0-based pixels of the full frame.
- Joint names and the left/right swap table are skp_core.regression's (H36M_JOINT_NAMES,
  H36M_SWAP_PERMUTATION: upstream's pairs with its (21, 28) typo fixed to (21, 29)).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np
import scipy.io
from PIL import Image

from offline_tools.datasets.base import (
    DatasetError,
    KeypointDataset,
    Sample,
    crop_with_fill,
    expect_dir,
    expect_file,
    pixels_to_normalized,
    read_image,
)
from skp_core.image_header import PixelLimitError, check_pixel_limit
from skp_core.regression import H36M_JOINT_NAMES, H36M_SWAP_PERMUTATION

__all__ = [
    "H36M_ACTIONS",
    "H36M_TEST_SUBJECTS",
    "H36M_TRAIN_SUBJECTS",
    "H36M_VALIDATION_SUBJECTS",
    "H36M_VALIDATION_TRAIN_SUBJECTS",
    "Human36M",
    "UnalignedHuman36M",
    "pose_crop_box",
]

H36M_ACTIONS: tuple[str, ...] = (
    "Directions",
    "Discussion",
    "Posing",
    "Waiting",
    "Greeting",
    "Walking",
)
H36M_TRAIN_SUBJECTS: tuple[int, ...] = (1, 5, 6, 7, 8, 9)
H36M_TEST_SUBJECTS: tuple[int, ...] = (11,)
H36M_VALIDATION_TRAIN_SUBJECTS: tuple[int, ...] = (1, 5, 6, 7, 8)
H36M_VALIDATION_SUBJECTS: tuple[int, ...] = (9,)
CROP_MARGIN = 100
CROP_JITTER = 100
_PIXEL_UNITS_ABOVE = 2.0
_FRAME_NAME = re.compile(r"img_(\d+)$")


def _subjects(split: str, validation: bool = False) -> tuple[int, ...]:
    """The reference's subjects of a split.

    ``validation`` holds S9 out of training and tests on it, so hyper-parameters can be
    searched without touching the test subject S11.
    """
    if validation:
        return H36M_VALIDATION_SUBJECTS if split == "test" else H36M_VALIDATION_TRAIN_SUBJECTS
    return H36M_TEST_SUBJECTS if split == "test" else H36M_TRAIN_SUBJECTS


def _action_folders(parent: Path) -> list[Path]:
    """Sub-folders of `parent` whose name starts with one of the six actions, sorted."""
    return sorted(p for p in parent.iterdir() if p.is_dir() and p.name.startswith(H36M_ACTIONS))


class _H36MBase(KeypointDataset):
    landmark_names: ClassVar[list[str]] = list(H36M_JOINT_NAMES)
    num_landmarks: ClassVar[int] = len(H36M_JOINT_NAMES)
    metric: ClassVar[str | None] = "orientation_invariant"
    flip_permutation: ClassVar[tuple[int, ...] | None] = tuple(
        int(i) for i in H36M_SWAP_PERMUTATION
    )


def _read_keypoints_2d(path: Path, dataset: str, width: int, height: int) -> np.ndarray:
    """`keypoints_2d` of one Landmarks .mat file -> normalized (x, y) [32, 2]."""
    expect_file(path, dataset, "landmark file")
    try:
        mat = scipy.io.loadmat(str(path))
    except (ValueError, OSError, NotImplementedError) as error:
        raise DatasetError(f"{dataset}: cannot read {path}: {error}") from error
    if "keypoints_2d" not in mat:
        raise DatasetError(f"{dataset}: {path} has no variable 'keypoints_2d'")
    points = np.asarray(mat["keypoints_2d"], dtype=np.float64)
    if points.ndim == 2 and points.shape[0] == 2 and points.shape[1] != 2:
        points = points.T
    if points.ndim != 2 or points.shape[1] != 2:
        raise DatasetError(f"{dataset}: {path}: keypoints_2d is {points.shape}, expected [J, 2]")
    if np.abs(points).max(initial=0.0) > _PIXEL_UNITS_ABOVE:
        return pixels_to_normalized(points, width, height)
    return points


def _read_mask(path: Path, dataset: str) -> np.ndarray:
    """Foreground mask in [0, 1] (0/1 or 0/255 files), float32 [H, W]."""
    expect_file(path, dataset, "background mask")
    try:
        check_pixel_limit(path)
        with Image.open(path) as handle:
            mask = np.asarray(handle, dtype=np.float32)
    except (PixelLimitError, Image.DecompressionBombError) as error:
        raise DatasetError(f"{dataset}: refused background mask {path}: {error}") from error
    except OSError as error:
        raise DatasetError(f"{dataset}: cannot decode background mask {path}: {error}") from error
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.max(initial=0.0) > 1.0:
        mask = mask / 255.0
    return mask


class Human36M(_H36MBase):
    """human3.6m: aligned frames times their foreground mask."""

    has_validation_split: ClassVar[bool] = True

    default_name = "human3.6m"

    def _build(self) -> int:
        self._frames: list[tuple[Path, Path, Path]] = []
        for subject in _subjects(self.split, self.validation):
            base = self.root / f"S{subject}"
            frames_dir = expect_dir(base / "WithBackground", self.name, f"S{subject} frames")
            for folder in _action_folders(frames_dir):
                for image_path in sorted(folder.glob("*.jpg")):
                    stem = image_path.stem
                    self._frames.append(
                        (
                            image_path,
                            base / "BackgroudMask" / folder.name / f"{stem}.png",
                            base / "Landmarks" / folder.name / f"{stem}.mat",
                        )
                    )
        if not self._frames:
            raise DatasetError(
                f"{self.name}: no frames for split {self.split!r}: expected "
                f"{self.root}/S<n>/WithBackground/<action>/<frame>.jpg"
            )
        return len(self._frames)

    def _load(self, index: int, rng: np.random.Generator | None) -> Sample:
        image_path, mask_path, landmark_path = self._frames[index]
        image = read_image(image_path, self.name)
        mask = _read_mask(mask_path, self.name)
        keypoints = _read_keypoints_2d(landmark_path, self.name, image.width, image.height)
        return Sample(image=image, path=str(image_path), keypoints=keypoints, mask=mask)


def pose_crop_box(
    points: np.ndarray,
    width: int,
    height: int,
    margin: int = CROP_MARGIN,
    shift: tuple[int, int] = (0, 0),
) -> tuple[int, int, int, int]:
    """Integer crop (x0, y0, x1, y1) around continuous-pixel points [J, 2] (upstream's rule).

    Square of the pose box's longer side, centred on the box, `margin` px per side (at most
    what the image has beyond that square), moved by `shift`, clipped to the image.
    """
    lo, hi = points.min(axis=0), points.max(axis=0)
    box_w, box_h = float(hi[0] - lo[0]), float(hi[1] - lo[1])
    side = max(box_w, box_h)
    margin_x = max(0.0, min(margin, width - side))
    margin_y = max(0.0, min(margin, height - side))
    x0 = max(0.0, lo[0] - (side - box_w) / 2.0 - margin_x + shift[0])
    y0 = max(0.0, lo[1] - (side - box_h) / 2.0 - margin_y + shift[1])
    x1 = min(float(width), x0 + side + 2.0 * margin_x)
    y1 = min(float(height), y0 + side + 2.0 * margin_y)
    ix0, iy0 = math.floor(x0), math.floor(y0)
    ix1, iy1 = max(ix0 + 1, math.ceil(x1)), max(iy0 + 1, math.ceil(y1))
    return ix0, iy0, min(ix1, width), min(iy1, height)


class UnalignedHuman36M(_H36MBase):
    """unaligned_human3.6m: full frames cropped around the annotated 2D pose."""

    default_name = "unaligned_human3.6m"

    def _build(self) -> int:
        self._frames: list[tuple[Path, np.ndarray]] = []
        for subject in _subjects(self.split):
            subject_dir = expect_dir(self.root / f"S{subject}", self.name, f"subject S{subject}")
            for folder in _action_folders(subject_dir):
                self._index_sequence(folder)
        if not self._frames:
            raise DatasetError(
                f"{self.name}: no frames for split {self.split!r}: expected "
                f"{self.root}/S<n>/<action>/imageSequence/<camera>/img_NNNNNN.jpg"
            )
        return len(self._frames)

    def _index_sequence(self, folder: Path) -> None:
        """Match every frame of one action folder to its row of annot.h5."""
        annot_path = expect_file(folder / "annot.h5", self.name, "pose annotations")
        sequence_dir = expect_dir(folder / "imageSequence", self.name, "image sequence")
        with h5py.File(annot_path, "r") as handle:
            for key in ("camera", "frame", "pose/2d"):
                if key not in handle:
                    raise DatasetError(f"{self.name}: {annot_path} has no dataset {key!r}")
            cameras = np.asarray(handle["camera"]).reshape(-1).astype(np.int64)
            frames = np.asarray(handle["frame"]).reshape(-1).astype(np.int64)
            poses = np.asarray(handle["pose/2d"], dtype=np.float64)
        rows = {(int(c), int(f)): i for i, (c, f) in enumerate(zip(cameras, frames, strict=True))}
        if len(rows) != len(cameras):
            raise DatasetError(f"{self.name}: {annot_path}: repeated (camera, frame) rows")
        for camera_dir in sorted(p for p in sequence_dir.iterdir() if p.is_dir()):
            if not camera_dir.name.isdigit():
                raise DatasetError(
                    f"{self.name}: camera folder {camera_dir} is not a camera id (digits)"
                )
            camera = int(camera_dir.name)
            for image_path in sorted(camera_dir.glob("*.jpg")):
                match = _FRAME_NAME.match(image_path.stem)
                row = rows.get((camera, int(match.group(1)))) if match else None
                if row is None:
                    raise DatasetError(
                        f"{self.name}: {image_path} has no row (camera {camera_dir.name}, "
                        f"frame from img_NNNNNN) in {annot_path}"
                    )
                self._frames.append((image_path, poses[row].reshape(-1, 2)))

    def _load(self, index: int, rng: np.random.Generator | None) -> Sample:
        image_path, pose = self._frames[index]
        image = read_image(image_path, self.name)
        centres = pose + 0.5  # 0-based pixel index -> continuous coordinate
        shift = (0, 0)
        if rng is not None:
            drawn = rng.integers(-CROP_JITTER, CROP_JITTER, size=2)
            shift = (int(drawn[0]), int(drawn[1]))
        x0, y0, x1, y1 = pose_crop_box(centres, image.width, image.height, shift=shift)
        crop = crop_with_fill(image, (x0, y0, x1, y1))
        keypoints = (centres - np.array([x0, y0])) / np.array([x1 - x0, y1 - y0])
        return Sample(image=crop, path=str(image_path), keypoints=keypoints)
