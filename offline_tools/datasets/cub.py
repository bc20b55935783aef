"""CUB-200-2011 birds: `cub_aligned` (AutoLink's cub.h5) and `cub_001/002/003/all` (CMR .mat).

cub_aligned layout: `cub.h5` at the dataset root with datasets
  {train,test}_img  uint8 [N, 3, H, W] (128 x 128 upstream)
  {train,test}_kp   float32 [N, 15, 2] in [0, 1]
  {train,test}_vis  uint8 [N, 15], 1 visible / 0 not
"train" and "regression" read train_*, "test" reads test_*; 5,964 / 2,874 images.

cub_00N / cub_all layout (the CMR cachedir):
  CUB_200_2011/images/<rel_path>                             the photos
  CUB_200_2011/cachedir/cub/data/{train,test}_cub_cleaned.mat  variable `images`: struct
      array with fields rel_path, bbox (x1, y1, x2, y2), parts [3, 15] = (x, y, visible)
  CUB_200_2011/cachedir/cub/sfm/anno_{train,test}.mat          `sfm_anno` (not read)
"train"/"regression" use train_cub_cleaned.mat, "test" test_cub_cleaned.mat. cub_00N keeps
class N only (the number before the dot in rel_path, "001.Black_footed_Albatross/...").
Each photo is cropped to its bird box + 5% padding per side, squared (the short side grows
around the centre), resized. With augment on the train split the box sides also move by up to
+-5% (uniform, CMR's jitter) and the crop is mirrored with probability 1/2, relabelling
left/right parts (CUB_MIRROR_PERMUTATION).

Assumptions (beyond METHOD.md), following the public files and their generating code:
- cub.h5 keypoints are stored (row, col) = (y, x): AutoLink's preprocessing writes
  concat(y, x) per part (its plots use kp[..., 1] as x). METHOD.md §7 says "(x, y)"; upstream
  swaps them, which the linear protocol cannot notice. We swap to (x, y). Values are used as
  stored (no half-pixel shift); image arrays [N, H, W, 3] are accepted too.
- .mat coordinates are 1-based MATLAB pixels (bbox inclusive), parts invisible when
  parts[2] == 0; loaded with scipy.io.loadmat(struct_as_record=False, squeeze_me=True), the
  way CMR reads them. The box padding/squaring follows CMR (padding and jitter relative to
  the 1-based inclusive width x2 - x1 + 1, box rounded to integers before squaring).
- Crop area outside the photo is black (upstream fills 1/255, i.e. black as well).
- Upstream also jitters and mirrors the regression images (it reuses the training loader);
  here only the train split with augment=True is augmented, so regression features are as
  repeatable as test features.
- The SfM annotations (`anno_{split}.mat`) carry a camera for mesh reconstruction and are
  not needed for keypoints; they are neither required nor read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

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
    mirror_keypoints,
    read_image,
)

__all__ = [
    "CUB_MIRROR_PERMUTATION",
    "CUB_PARTS",
    "CubAligned",
    "CubParts",
    "cub_crop_box",
]

# The 15 part names of CUB-200-2011 (parts/parts.txt), in annotation order. "left"/"right"
# are the bird's own sides.
CUB_PARTS: list[str] = [
    "back",
    "beak",
    "belly",
    "breast",
    "crown",
    "forehead",
    "left_eye",
    "left_leg",
    "left_wing",
    "nape",
    "right_eye",
    "right_leg",
    "right_wing",
    "tail",
    "throat",
]
# Slot i of a mirrored bird takes part CUB_MIRROR_PERMUTATION[i]: eyes, legs and wings swap
# (CMR's kp_perm, 0-based). An involution.
CUB_MIRROR_PERMUTATION: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 10, 11, 12, 9, 6, 7, 8, 13, 14)
PADDING_FRACTION = 0.05
JITTER_FRACTION = 0.05


class _CubBase(KeypointDataset):
    """Shared CUB class attributes."""

    landmark_names: ClassVar[list[str]] = CUB_PARTS
    num_landmarks: ClassVar[int] = 15
    metric: ClassVar[str | None] = "visible"
    flip_permutation: ClassVar[tuple[int, ...] | None] = CUB_MIRROR_PERMUTATION


class CubAligned(_CubBase):
    """cub_aligned: AutoLink's pre-cropped 128 px birds from cub.h5 (no augmentation)."""

    default_name = "cub_aligned"

    def _build(self) -> int:
        self._h5_path = expect_file(self.root / "cub.h5", self.name, "HDF5 file")
        prefix = "test" if self.split == "test" else "train"
        self._keys = {kind: f"{prefix}_{kind}" for kind in ("img", "kp", "vis")}
        self._h5: h5py.File | None = None
        self._h5_pid = -1
        with h5py.File(self._h5_path, "r") as handle:
            lengths = set()
            for key in self._keys.values():
                if key not in handle:
                    raise DatasetError(
                        f"{self.name}: dataset {key!r} missing from {self._h5_path} "
                        f"(expected {sorted(self._keys.values())})"
                    )
                lengths.add(handle[key].shape[0])
            if len(lengths) != 1:
                raise DatasetError(f"{self.name}: {self._h5_path} {prefix}_* lengths differ")
            # Keypoints and visibility are small: keep them; images are read per item.
            self._kp = np.asarray(handle[self._keys["kp"]], dtype=np.float64)[..., ::-1].copy()
            self._vis = np.asarray(handle[self._keys["vis"]], dtype=np.float64)
        return lengths.pop()

    def _file(self) -> h5py.File:
        """This process's handle (DataLoader workers each open their own after the fork)."""
        if self._h5 is None or self._h5_pid != os.getpid():
            self._h5 = h5py.File(self._h5_path, "r")
            self._h5_pid = os.getpid()
        return self._h5

    def _load(self, index: int, rng: np.random.Generator | None) -> Sample:
        array = np.asarray(self._file()[self._keys["img"]][index])
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
            array = array.transpose(1, 2, 0)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        image = Image.fromarray(np.ascontiguousarray(array.astype(np.uint8))).convert("RGB")
        return Sample(
            image=image,
            path=f"{self._h5_path}#{self._keys['img']}[{index}]",
            keypoints=self._kp[index],
            visibility=self._vis[index],
        )

    def __getstate__(self) -> dict[str, Any]:
        """Drop the open HDF5 handle when pickled (spawned DataLoader workers)."""
        state = self.__dict__.copy()
        state["_h5"] = None
        return state


def cub_crop_box(
    bbox: np.ndarray,
    rng: np.random.Generator | None = None,
    padding: float = PADDING_FRACTION,
    jitter: float = JITTER_FRACTION,
) -> tuple[int, int, int, int]:
    """CMR's square crop of a 0-based inclusive box (x1, y1, x2, y2) -> pixels [x0, x0 + side).

    Each side moves out by `padding` of the box size plus, when `rng` is given, a uniform
    +-`jitter`; the box is rounded to integers and its short side grown around the centre.
    """
    x1, y1, x2, y2 = (float(v) for v in bbox)
    width, height = x2 - x1 + 1.0, y2 - y1 + 1.0
    draws = rng.random(4) if rng is not None else np.full(4, 0.5)  # 0.5 -> no jitter
    shifts = (1.0 - 2.0 * draws) * jitter
    x1 -= padding * width + shifts[0] * width
    y1 -= padding * height + shifts[1] * height
    x2 += padding * width + shifts[2] * width
    y2 += padding * height + shifts[3] * height
    bx1, by1, bx2, by2 = (round(v) for v in (x1, y1, x2, y2))
    box_w, box_h = bx2 - bx1 + 1, by2 - by1 + 1
    side = max(box_w, box_h)
    bx1 -= round((side - box_w) / 2.0)
    by1 -= round((side - box_h) / 2.0)
    return bx1, by1, bx1 + side, by1 + side


def _records(path: Path, dataset: str) -> list[Any]:
    """The `images` struct array of a *_cub_cleaned.mat file as a list of records."""
    expect_file(path, dataset, "CMR annotation file")
    try:
        mat = scipy.io.loadmat(str(path), struct_as_record=False, squeeze_me=True)
    except (ValueError, OSError, NotImplementedError) as error:
        raise DatasetError(f"{dataset}: cannot read {path}: {error}") from error
    if "images" not in mat:
        raise DatasetError(f"{dataset}: {path} has no variable 'images'")
    return list(np.atleast_1d(mat["images"]))


def _class_of(rel_path: str) -> int:
    """CUB class number from '001.Black_footed_Albatross/...' (as upstream)."""
    return int(rel_path.split("/")[0].split(".")[0])


class CubParts(_CubBase):
    """cub_001 / cub_002 / cub_003 / cub_all: CMR annotations, bird-box crops."""

    default_name = "cub_all"

    def __init__(self, *args: Any, class_id: int | None = None, **kwargs: Any) -> None:
        self.class_id = class_id
        super().__init__(*args, **kwargs)

    def _build(self) -> int:
        data_dir = self.root / "CUB_200_2011"
        self._image_dir = expect_dir(data_dir / "images", self.name, "CUB images")
        mat_split = "test" if self.split == "test" else "train"
        mat_path = data_dir / "cachedir" / "cub" / "data" / f"{mat_split}_cub_cleaned.mat"
        self._items: list[tuple[str, np.ndarray, np.ndarray]] = []
        for record in _records(mat_path, self.name):
            rel_path = str(record.rel_path)
            if self.class_id is not None and _class_of(rel_path) != self.class_id:
                continue
            box = record.bbox
            bbox = np.array([box.x1, box.y1, box.x2, box.y2], dtype=np.float64) - 1.0
            parts = np.asarray(record.parts, dtype=np.float64).reshape(3, -1)
            if parts.shape[1] != 15:
                raise DatasetError(f"{self.name}: {rel_path}: parts has {parts.shape[1]} columns")
            self._items.append((rel_path, bbox, parts))
        if not self._items:
            raise DatasetError(f"{self.name}: no images of class {self.class_id} in {mat_path}")
        return len(self._items)

    def _load(self, index: int, rng: np.random.Generator | None) -> Sample:
        rel_path, bbox, parts = self._items[index]
        path = self._image_dir / rel_path
        image = read_image(path, self.name)
        x0, y0, x1, y1 = cub_crop_box(bbox, rng)
        crop = crop_with_fill(image, (x0, y0, x1, y1))
        visible = parts[2] > 0
        # 1-based pixel index p -> continuous p - 0.5 -> position in the crop.
        centres = parts[:2].T - 0.5
        keypoints = (centres - np.array([x0, y0])) / np.array([x1 - x0, y1 - y0])
        keypoints[~visible] = 0.5
        visibility = visible.astype(np.float64)
        if rng is not None and rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            keypoints, visibility = mirror_keypoints(keypoints, visibility, CUB_MIRROR_PERMUTATION)
        return Sample(image=crop, path=str(path), keypoints=keypoints, visibility=visibility)
