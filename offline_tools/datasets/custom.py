"""Any folder of images (`custom`): optimize, select and visualize, no evaluation.

Layout: the dataset root itself; every file under it (recursively, hidden files skipped)
whose extension is .jpg, .jpeg, .png, .bmp, .webp, .tif or .tiff (any case), in sorted
relative-path order. Every split name returns the same images (there are no annotations, so
items carry no keypoints and `has_keypoints` is False).

Real folders hold the odd broken download: every file is decoded once when the dataset is
built (JPEGs at reduced size, so this stays cheap; a header claiming more pixels than
`MAX_IMAGE_PIXELS` is refused before any decoding), and files that fail are skipped with one
warning and listed in `dataset.skipped`, instead of killing a long optimization later.
Images are read with their EXIF orientation applied and converted to RGB (base.read_image).
With augment on the train split an image is mirrored with probability 1/2.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from offline_tools.datasets.base import (
    DatasetError,
    KeypointDataset,
    Sample,
    expect_dir,
    find_images,
    read_image,
)
from skp_core.image_header import PixelLimitError, check_pixel_limit

__all__ = ["CustomImages"]

# Size the decode check asks JPEG's draft mode for: enough to read the whole stream.
_CHECK_DRAFT_SIZE = (64, 64)


def _decodes(path: Path) -> str | None:
    """None when `path` decodes as an image, else the reason it does not."""
    try:
        check_pixel_limit(path)
        with Image.open(path) as handle:
            if handle.format == "JPEG":
                handle.draft("RGB", _CHECK_DRAFT_SIZE)
            handle.load()
    except (PixelLimitError, Image.DecompressionBombError) as error:
        return str(error)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        return f"{type(error).__name__}: {error}"
    return None


class CustomImages(KeypointDataset):
    """custom: every readable image in a folder tree, unannotated."""

    default_name = "custom"
    landmark_names: ClassVar[list[str]] = []
    num_landmarks: ClassVar[int] = 0
    metric: ClassVar[str | None] = None

    def _build(self) -> int:
        folder = expect_dir(self.root, self.name, "image folder")
        self.has_keypoints = False
        self.skipped: list[Path] = []
        reasons: list[str] = []
        self._paths: list[Path] = []
        for path in find_images(folder):
            reason = _decodes(path)
            if reason is None:
                self._paths.append(path)
            else:
                self.skipped.append(path)
                reasons.append(f"{path}: {reason}")
        if self.skipped:
            shown = "; ".join(reasons[:5]) + ("; ..." if len(reasons) > 5 else "")
            warnings.warn(
                f"{self.name}: skipped {len(self.skipped)} unreadable image file(s) under "
                f"{folder}: {shown}",
                stacklevel=4,
            )
        if not self._paths:
            raise DatasetError(
                f"{self.name}: no readable images under {folder} (looked for "
                "*.jpg, *.jpeg, *.png, *.bmp, *.webp, *.tif, *.tiff, recursively)"
            )
        return len(self._paths)

    def _load(self, index: int, rng: np.random.Generator | None) -> Sample:
        path = self._paths[index]
        image = read_image(path, self.name)
        if rng is not None and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return Sample(image=image, path=str(path))
