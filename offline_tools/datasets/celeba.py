"""CelebA faces with the MAFL split: `celeba_aligned` and `celeba_wild` (METHOD.md §7).

Layout under the dataset root:
  Anno/list_landmarks_align_celeba.txt     (celeba_aligned)
  Anno/list_landmarks_celeba.txt           (celeba_wild)
  Anno/list_bbox_celeba.txt                (celeba_wild)
  MAFL/training.txt, MAFL/testing.txt      image names, one a line ("000001.jpg")
  Img/img_align_celeba_png/NNNNNN.png      (celeba_aligned)
  Img/img_celeba/NNNNNN.jpg                (celeba_wild)

Splits: "train" and "regression" = MAFL/training.txt (19,000), "test" = MAFL/testing.txt
(1,000). celeba_wild keeps only images whose face box covers >= 0.3 of the image area
(width * height of the box >= 0.3 * W * H, both splits, as upstream).

Assumptions (beyond METHOD.md), following the public CelebA release:
- Landmark and box files: line 1 = image count, line 2 = column names, then one line per
  image: "<name> <ints...>", whitespace separated. Landmarks are 5 (x, y) pairs in the order
  left eye, right eye, nose, left mouth corner, right mouth corner, in pixels of that image
  ("left" = smaller x as seen in the image). Boxes are "x_1 y_1 width height".
- Rows are matched by image name stem (000001.jpg <-> 000001.png), not by line number, so the
  aligned PNG re-encoding and the MAFL lists (which name .jpg files) line up; upstream's
  line-number lookup gives the same rows on the official files.
- Landmark pixels are 0-based pixel indices: x -> (x + 0.5) / W (see base.py).
- No crop: the whole image is resized to the model size (aspect ignored), as upstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from offline_tools.datasets.base import (
    DatasetError,
    KeypointDataset,
    Sample,
    expect_dir,
    expect_file,
    image_file_size,
    pixels_to_normalized,
    read_image,
)

__all__ = ["CELEBA_LANDMARKS", "CelebAAligned", "CelebAWild", "read_celeba_table"]

CELEBA_LANDMARKS: list[str] = ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"]
# celeba_wild keeps an image when its face box covers at least this fraction of it.
WILD_MIN_BOX_AREA = 0.3


def read_celeba_table(path: Path, dataset: str, columns: int) -> dict[str, np.ndarray]:
    """Parse a CelebA annotation file (2 header lines) into {image stem: int values}."""
    table: dict[str, np.ndarray] = {}
    with expect_file(path, dataset, "annotation file").open() as handle:
        lines = handle.read().splitlines()
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != columns + 1:
            raise DatasetError(
                f"{dataset}: {path} line {number}: expected a name and {columns} numbers, "
                f"got {len(fields)} fields"
            )
        try:
            table[Path(fields[0]).stem] = np.array([float(v) for v in fields[1:]])
        except ValueError as error:
            raise DatasetError(f"{dataset}: {path} line {number}: {error}") from error
    return table


def _read_split(path: Path, dataset: str) -> list[str]:
    """Image name stems listed in a MAFL split file, in file order."""
    with expect_file(path, dataset, "MAFL split list").open() as handle:
        return [Path(line.split()[0]).stem for line in handle if line.strip()]


class _CelebA(KeypointDataset):
    """Shared CelebA logic; subclasses pick the landmark file and image folder."""

    landmark_names: ClassVar[list[str]] = CELEBA_LANDMARKS
    num_landmarks: ClassVar[int] = 5
    metric: ClassVar[str | None] = "inter_eye_distance"
    # Mirrored face: left eye <-> right eye, mouth corners swap.
    flip_permutation: ClassVar[tuple[int, ...] | None] = (1, 0, 2, 4, 3)
    landmark_file: ClassVar[str] = ""
    image_folder: ClassVar[str] = ""
    image_suffix: ClassVar[str] = ""

    def _build(self) -> int:
        split_file = "testing.txt" if self.split == "test" else "training.txt"
        stems = _read_split(self.root / "MAFL" / split_file, self.name)
        self._landmarks = read_celeba_table(self.root / "Anno" / self.landmark_file, self.name, 10)
        self._image_dir = expect_dir(self.root / "Img" / self.image_folder, self.name, "images")
        missing = [s for s in stems if s not in self._landmarks]
        if missing:
            raise DatasetError(
                f"{self.name}: {len(missing)} MAFL images (first {missing[0]}) have no row in "
                f"{self.root / 'Anno' / self.landmark_file}"
            )
        self._stems = self._filter(stems)
        return len(self._stems)

    def _filter(self, stems: list[str]) -> list[str]:
        """Hook for celeba_wild's box-area filter."""
        return stems

    def image_path(self, stem: str) -> Path:
        """Where the image of `stem` lives in this variant's layout."""
        return self._image_dir / f"{stem}{self.image_suffix}"

    def _load(self, index: int, rng: np.random.Generator | None) -> Sample:
        path = self.image_path(self._stems[index])
        image = read_image(path, self.name)
        points = self._landmarks[self._stems[index]].reshape(5, 2)
        keypoints = pixels_to_normalized(points, image.width, image.height)
        return Sample(image=image, path=str(path), keypoints=keypoints)


class CelebAAligned(_CelebA):
    """celeba_aligned: the 178 x 218 aligned crops (PNG re-encoding), whole image used."""

    default_name = "celeba_aligned"
    landmark_file = "list_landmarks_align_celeba.txt"
    image_folder = "img_align_celeba_png"
    image_suffix = ".png"


class CelebAWild(_CelebA):
    """celeba_wild: the original photos, kept when the face box covers >= 30% of the image."""

    default_name = "celeba_wild"
    landmark_file = "list_landmarks_celeba.txt"
    image_folder = "img_celeba"
    image_suffix = ".jpg"

    def _filter(self, stems: list[str]) -> list[str]:
        boxes = read_celeba_table(self.root / "Anno" / "list_bbox_celeba.txt", self.name, 4)
        kept: list[str] = []
        self.dropped: list[str] = []
        for stem in stems:
            if stem not in boxes:
                raise DatasetError(
                    f"{self.name}: image {stem} has no row in "
                    f"{self.root / 'Anno' / 'list_bbox_celeba.txt'}"
                )
            path = expect_file(self.image_path(stem), self.name, "image")
            width, height = image_file_size(path, self.name)
            box_w, box_h = boxes[stem][2], boxes[stem][3]
            if box_w * box_h >= WILD_MIN_BOX_AREA * width * height:
                kept.append(stem)
            else:
                self.dropped.append(stem)
        return kept
