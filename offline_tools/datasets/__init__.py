"""Benchmark datasets of StableKeypoints by name (METHOD.md §7), behind one item format.

    ds = load_dataset("cub_all", "/data/cub", "train", image_size=512, seed=0, augment=True)
    item = ds[0]   # {"image": [3, S, S], "keypoints": [J, 2], "visibility": [J], ...}

Splits: "train" (images the tokens are optimized on), "regression" (training images with
annotations, used to fit the linear regressor), "test" (scored). Item format, coordinate
conventions and seeding: offline_tools.datasets.base. Each family module documents its
layout and every assumption about the files.

Importing this package is cheap (no torch, pandas or scipy): the family modules load on first
use, so skp-train can list the dataset names in --help without them.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offline_tools.datasets.base import KeypointDataset

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

# name -> (family module, class, fixed keyword arguments)
_FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "celeba_aligned": ("celeba", "CelebAAligned", {}),
    "celeba_wild": ("celeba", "CelebAWild", {}),
    "cub_aligned": ("cub", "CubAligned", {}),
    "cub_001": ("cub", "CubParts", {"class_id": 1}),
    "cub_002": ("cub", "CubParts", {"class_id": 2}),
    "cub_003": ("cub", "CubParts", {"class_id": 3}),
    "cub_all": ("cub", "CubParts", {"class_id": None}),
    "taichi": ("taichi", "TaiChi", {}),
    "deepfashion": ("deepfashion", "DeepFashion", {}),
    "human3.6m": ("human36m", "Human36M", {}),
    "unaligned_human3.6m": ("human36m", "UnalignedHuman36M", {}),
    "custom": ("custom", "CustomImages", {}),
}

# Names re-exported from the modules that define them, imported when first asked for.
_LAZY = {
    "SPLITS": "base",
    "DatasetError": "base",
    "KeypointDataset": "base",
    "mirror_keypoints": "base",
    "CUB_MIRROR_PERMUTATION": "cub",
    "CUB_PARTS": "cub",
}


def _constructor(name: str) -> Callable[..., KeypointDataset]:
    module, attribute, fixed = _FAMILIES[name]
    family = getattr(importlib.import_module(f"offline_tools.datasets.{module}"), attribute)
    return partial(family, **fixed) if fixed else family


def __getattr__(attribute: str) -> Any:
    if attribute == "DATASETS":  # name -> constructor(root, split, *, image_size, ...)
        return {name: _constructor(name) for name in _FAMILIES}
    if attribute in _LAZY:
        module = importlib.import_module(f"offline_tools.datasets.{_LAZY[attribute]}")
        return getattr(module, attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


def list_datasets() -> list[str]:
    """Registered dataset names, in registry order."""
    return list(_FAMILIES)


def load_dataset(
    name: str,
    root: str | os.PathLike[str],
    split: str,
    *,
    image_size: int = 512,
    seed: int = 0,
    augment: bool = False,
    allow_pickle: bool = False,
    validation: bool = False,
) -> KeypointDataset:
    """Build dataset `name` from its layout under `root` for `split`.

    `augment` randomizes only the train split (seeded by `seed`); `allow_pickle` lets Tai-Chi
    read its upstream pandas pickles (unpickling runs code from the file: only for trusted
    files; the CSV export needs no opt-in). Raises ValueError for an unknown name or split and
    DatasetError when files are missing or unreadable (the message names the expected path).
    """
    from offline_tools.datasets.base import SPLITS

    if name not in _FAMILIES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(_FAMILIES)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return _constructor(name)(
        root,
        split,
        image_size=image_size,
        seed=seed,
        augment=augment,
        allow_pickle=allow_pickle,
        name=name,
        validation=validation,
    )
