"""Tai-Chi-HD (`taichi`), METHOD.md §7.

Layout under the dataset root:
  train/<video>/<frame>.png                        "train" split: every image under train/
  landmark/taichi_{train,test}_gt.pkl              pandas DataFrame: file_name, value
  landmark/taichi_{train,test}_gt.csv              the same table as CSV (accepted instead)
  eval_images/taichi-256/{train,test}/<file_name>  images of "regression" / "test"
"regression" uses taichi_train_gt (5,000 images), "test" taichi_test_gt (300).

The annotation tables are pandas pickles upstream. Unpickling runs arbitrary code stored in
the file, so the .pkl is read only with `allow_pickle=True`. A CSV export with columns
file_name and value (JSON [[x, y], ...]) is read without that risk and is preferred when both
exist; `export_csv` writes one from a trusted pickle.

Assumptions (beyond METHOD.md):
- value is [18, 2] (x, y) pixels of the 256 x 256 image (any shape holding 36 numbers is
  reshaped to [18, 2]); a joint is missing when either coordinate is negative (-1 in the
  file) -> visibility 0. Upstream tests `> 0`, which also drops a joint lying exactly on the
  first row or column; that single-pixel difference is not reproduced.
- Pixels are 0-based indices normalized by the actual image size: (x + 0.5) / W (base.py);
  upstream divides by 256, the size of every Tai-Chi image.
- Joint order is OpenPose/COCO-18 (the annotations were made with that skeleton); the names
  are informational only, the protocol never relies on them.
- The train split lists images recursively under train/ (upstream: torchvision ImageFolder,
  i.e. one folder per video). With augment, a train image is mirrored with probability 1/2
  (upstream's RandomHorizontalFlip); train images carry no keypoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from PIL import Image

from offline_tools.datasets.base import (
    DatasetError,
    KeypointDataset,
    Sample,
    expect_dir,
    find_images,
    pixels_to_normalized,
    read_image,
)

__all__ = ["COCO18_JOINTS", "TaiChi", "export_csv", "read_taichi_table"]

COCO18_JOINTS: list[str] = [
    "nose",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_eye",
    "left_eye",
    "right_ear",
    "left_ear",
]
_NUM_JOINTS = 18


def _table_paths(root: Path, table_split: str) -> tuple[Path, Path]:
    """(csv, pkl) locations of one annotation table."""
    base = root / "landmark" / f"taichi_{table_split}_gt"
    return base.with_suffix(".csv"), base.with_suffix(".pkl")


def _as_points(value: object, where: str) -> np.ndarray:
    """One `value` cell (array, list or JSON text) -> float [18, 2]."""
    if isinstance(value, str):
        value = json.loads(value)
    points = np.asarray(value, dtype=np.float64)
    if points.size != 2 * _NUM_JOINTS:
        raise DatasetError(f"taichi: {where}: value has {points.size} numbers, expected 36")
    return points.reshape(_NUM_JOINTS, 2)


def read_taichi_table(
    root: Path, table_split: str, *, allow_pickle: bool = False, dataset: str = "taichi"
) -> list[tuple[str, np.ndarray]]:
    """[(file_name, [18, 2] pixels)] from the CSV export, or the pickle if allowed."""
    csv_path, pkl_path = _table_paths(root, table_split)
    if csv_path.is_file():
        try:
            frame = pd.read_csv(csv_path, dtype={"file_name": str, "value": str})
        except (ValueError, OSError) as error:
            raise DatasetError(f"{dataset}: cannot read {csv_path}: {error}") from error
        source = csv_path
    elif pkl_path.is_file():
        if not allow_pickle:
            raise DatasetError(
                f"{dataset}: refusing to unpickle {pkl_path}: loading a pickle can run "
                "arbitrary code stored in the file. If you trust it, pass allow_pickle=True "
                "(skp-train --allow-pickle); or provide the CSV export "
                f"{csv_path} with columns file_name, value (JSON [[x, y], ...]), which is read "
                "without that risk (offline_tools.datasets.taichi.export_csv writes it)."
            )
        frame = pd.read_pickle(pkl_path)
        source = pkl_path
    else:
        raise DatasetError(
            f"{dataset}: missing annotation table: expected {csv_path} (CSV: file_name, "
            f"value as JSON) or {pkl_path} (pandas pickle, needs allow_pickle=True)"
        )
    if "file_name" not in frame.columns or "value" not in frame.columns:
        raise DatasetError(
            f"{dataset}: {source} needs columns file_name and value, has {list(frame.columns)}"
        )
    return [
        (str(name), _as_points(value, f"{source} row {row}"))
        for row, (name, value) in enumerate(zip(frame["file_name"], frame["value"], strict=True))
    ]


def export_csv(root: str | Path, table_split: str, *, allow_pickle: bool = False) -> Path:
    """Write landmark/taichi_{split}_gt.csv from the (trusted) pickle; return its path."""
    root = Path(root)
    csv_path, pkl_path = _table_paths(root, table_split)
    if not allow_pickle:
        raise DatasetError(
            f"taichi: converting {pkl_path} unpickles it; pass allow_pickle=True if you trust it"
        )
    if not pkl_path.is_file():
        raise DatasetError(f"taichi: missing annotation table: expected a file at {pkl_path}")
    frame = pd.read_pickle(pkl_path)
    rows = [
        {"file_name": str(name), "value": json.dumps(_as_points(value, str(pkl_path)).tolist())}
        for name, value in zip(frame["file_name"], frame["value"], strict=True)
    ]
    pd.DataFrame(rows, columns=["file_name", "value"]).to_csv(csv_path, index=False)
    return csv_path


class TaiChi(KeypointDataset):
    """taichi: unannotated train frames, annotated regression/test frames."""

    default_name = "taichi"
    landmark_names: ClassVar[list[str]] = COCO18_JOINTS
    num_landmarks: ClassVar[int] = _NUM_JOINTS
    metric: ClassVar[str | None] = "mean_average_error"

    def _build(self) -> int:
        if self.split == "train":
            folder = expect_dir(self.root / "train", self.name, "training frames")
            self._paths = find_images(folder)
            if not self._paths:
                raise DatasetError(f"{self.name}: no images found under {folder}")
            self._points: list[np.ndarray] | None = None
            self.has_keypoints = False
            return len(self._paths)
        table_split = "test" if self.split == "test" else "train"
        image_dir = expect_dir(
            self.root / "eval_images" / "taichi-256" / table_split, self.name, "evaluation images"
        )
        table = read_taichi_table(
            self.root, table_split, allow_pickle=self.allow_pickle, dataset=self.name
        )
        self._paths = [image_dir / name for name, _ in table]
        self._points = [points for _, points in table]
        return len(self._paths)

    def _load(self, index: int, rng: np.random.Generator | None) -> Sample:
        path = self._paths[index]
        image = read_image(path, self.name)
        if self._points is None:
            if rng is not None and rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            return Sample(image=image, path=str(path))
        points = self._points[index]
        visibility = (points >= 0).all(axis=1).astype(np.float64)
        keypoints = pixels_to_normalized(points, image.width, image.height)
        return Sample(image=image, path=str(path), keypoints=keypoints, visibility=visibility)
