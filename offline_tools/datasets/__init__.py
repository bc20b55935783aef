"""Benchmark datasets of StableKeypoints by name (METHOD.md §7), behind one item format.

    ds = load_dataset("cub_all", "/data/cub", "train", image_size=512, seed=0, augment=True)
    item = ds[0]   # {"image": [3, S, S], "keypoints": [J, 2], "visibility": [J], ...}

Splits: "train" (images the tokens are optimized on), "regression" (training images with
annotations, used to fit the linear regressor), "test" (scored). Item format, coordinate
conventions and seeding: offline_tools.datasets.base. Each family module documents its
layout and every assumption about the files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

from offline_tools.datasets.base import (
    SPLITS,
    DatasetError,
    KeypointDataset,
    mirror_keypoints,
)
from offline_tools.datasets.celeba import CelebAAligned, CelebAWild
from offline_tools.datasets.cub import CUB_MIRROR_PERMUTATION, CUB_PARTS, CubAligned, CubParts
from offline_tools.datasets.custom import CustomImages
from offline_tools.datasets.deepfashion import DeepFashion
from offline_tools.datasets.human36m import Human36M, UnalignedHuman36M
from offline_tools.datasets.taichi import TaiChi

__all__ = [
    "CUB_MIRROR_PERMUTATION",
    "CUB_PARTS",
    "DATASETS",
    "SPLITS",
    "DatasetError",
    "KeypointDataset",
    "list_datasets",
    "load_dataset",
    "mirror_keypoints",
]

# name -> constructor(root, split, *, image_size, seed, augment, allow_pickle, name)
DATASETS: dict[str, Callable[..., KeypointDataset]] = {
    "celeba_aligned": CelebAAligned,
    "celeba_wild": CelebAWild,
    "cub_aligned": CubAligned,
    "cub_001": partial(CubParts, class_id=1),
    "cub_002": partial(CubParts, class_id=2),
    "cub_003": partial(CubParts, class_id=3),
    "cub_all": partial(CubParts, class_id=None),
    "taichi": TaiChi,
    "deepfashion": DeepFashion,
    "human3.6m": Human36M,
    "unaligned_human3.6m": UnalignedHuman36M,
    "custom": CustomImages,
}


def list_datasets() -> list[str]:
    """Registered dataset names, in registry order."""
    return list(DATASETS)


def load_dataset(
    name: str,
    root: str | os.PathLike[str],
    split: str,
    *,
    image_size: int = 512,
    seed: int = 0,
    augment: bool = False,
    allow_pickle: bool = False,
) -> KeypointDataset:
    """Build dataset `name` from its layout under `root` for `split`.

    `augment` randomizes only the train split (seeded by `seed`); `allow_pickle` lets Tai-Chi
    read its upstream pandas pickles (unpickling runs code from the file: only for trusted
    files; the CSV export needs no opt-in). Raises ValueError for an unknown name or split and
    DatasetError when files are missing or unreadable (the message names the expected path).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return DATASETS[name](
        root,
        split,
        image_size=image_size,
        seed=seed,
        augment=augment,
        allow_pickle=allow_pickle,
        name=name,
    )
