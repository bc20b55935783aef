"""DeepFashion in-shop, the unsupervised-disentangling release (`deepfashion`), METHOD.md §7.

Layout under the dataset root:
  data_{train,test}.csv    a header line, then one row per image; the 2nd column is the image
                           path relative to img/
  data_{train,test}.json   a JSON list, entry i = row i of the CSV: {"keypoints": [[x, y], ...]}
  img/<path>               the 256 x 256 photos
"train" and "regression" read the train files (10,604 images), "test" the test files (1,179).

Assumptions (beyond METHOD.md), following the AutoLink/StableKeypoints loaders:
- Keypoints are (x, y) pixels of the image (256 px), 0-based indices normalized by the actual
  image size: (x + 0.5) / W (base.py).
- Every joint counts as visible and coordinates are used as given, exactly as upstream's PCK
  protocol does (it has no visibility); a negative coordinate, if the file has one, stays.
- The joint count is read from the JSON (OpenPose/COCO-18 order when it holds 18, whose names
  are then used; generic names otherwise).
- CSV fields are split with the csv module (quoted paths allowed); upstream splits on commas.
- Images are fed in [0, 1] once: upstream normalized them twice (the VAE saw [-3, 1]).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import ClassVar

import numpy as np

from offline_tools.datasets.base import (
    DatasetError,
    KeypointDataset,
    Sample,
    expect_dir,
    expect_file,
    pixels_to_normalized,
    read_image,
)
from offline_tools.datasets.taichi import COCO18_JOINTS

__all__ = ["DeepFashion", "read_deepfashion_split"]


def read_deepfashion_split(
    root: Path, table_split: str, dataset: str = "deepfashion"
) -> tuple[list[str], np.ndarray]:
    """(relative image paths, keypoints [N, J, 2] pixels) of data_{split}.csv/.json."""
    csv_path = expect_file(root / f"data_{table_split}.csv", dataset, "image list")
    json_path = expect_file(root / f"data_{table_split}.json", dataset, "keypoint file")
    with csv_path.open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    paths: list[str] = []
    for number, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) < 2 or not row[1].strip():
            raise DatasetError(f"{dataset}: {csv_path} line {number}: no 2nd column (image path)")
        paths.append(row[1].strip())
    try:
        entries = json.loads(json_path.read_text())
        points = np.asarray([entry["keypoints"] for entry in entries], dtype=np.float64)
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetError(
            f"{dataset}: {json_path}: expected a list of {{'keypoints': [[x, y], ...]}} "
            f"with the same joint count everywhere ({error})"
        ) from error
    if points.ndim != 3 or points.shape[-1] != 2 or len(points) != len(paths):
        raise DatasetError(
            f"{dataset}: {json_path} holds keypoints {points.shape}, expected "
            f"[{len(paths)}, J, 2] to match the {len(paths)} rows of {csv_path}"
        )
    return paths, points


class DeepFashion(KeypointDataset):
    """deepfashion: whole 256 px images, keypoints on every split."""

    default_name = "deepfashion"
    landmark_names: ClassVar[list[str]] = COCO18_JOINTS
    num_landmarks: ClassVar[int] = 18
    metric: ClassVar[str | None] = "pck"

    def _build(self) -> int:
        table_split = "test" if self.split == "test" else "train"
        self._image_dir = expect_dir(self.root / "img", self.name, "images")
        self._rel_paths, self._points = read_deepfashion_split(self.root, table_split, self.name)
        joints = self._points.shape[1] if len(self._points) else self.num_landmarks
        if joints != type(self).num_landmarks:
            self.num_landmarks = joints
            self.landmark_names = [f"joint_{j}" for j in range(joints)]
        return len(self._rel_paths)

    def _load(self, index: int, rng: np.random.Generator | None) -> Sample:
        path = self._image_dir / self._rel_paths[index]
        image = read_image(path, self.name)
        keypoints = pixels_to_normalized(self._points[index], image.width, image.height)
        return Sample(image=image, path=str(path), keypoints=keypoints)
