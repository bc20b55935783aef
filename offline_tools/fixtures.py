"""Tiny benchmark datasets in their exact on-disk layouts, built from real photos.

Why: CI has none of the real datasets (tens of GB, licence-gated), yet every loader and the
whole `skp-train` pipeline must run on each layout. `write_fixture(name, root)` writes a
handful of small images (64-400 px) in the same files and formats METHOD.md §7 and the
loader modules describe (txt, mat, h5, pandas pkl + its CSV export, csv + json), cut from
photos shipped with scikit-image (astronaut, chelsea, coffee, rocket, camera, logo) and
matplotlib (grace_hopper.jpg).

Annotations are plausible and, above all, exact: every keypoint is transformed together with
its photo, and two of them per image are painted as solid squares (magenta and cyan, see
MARKER_JOINTS) centred on the annotated pixel. A test can find those squares in a loaded item
and check that the item's keypoint lands on them after any crop, resize or mirror, which is
how a loader bug (swapped x/y, off-by-one box, missing left/right relabelling) shows up.

CLI: python -m offline_tools.fixtures --out DIR [--dataset NAME] [--num-train N]
     [--num-test N] [--seed S]   writes DIR/<name>/ for each dataset (or the one named).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.io
from PIL import Image, ImageDraw

__all__ = [
    "CYAN",
    "FIXTURE_NAMES",
    "MAGENTA",
    "MARKER_JOINTS",
    "main",
    "write_all_fixtures",
    "write_fixture",
]

MAGENTA = (255, 0, 255)
CYAN = (0, 255, 255)

Box = tuple[float, float, float, float]

# ---------------------------------------------------------------------------------------
# Source photos and their annotations (0-based pixel indices of the original photo).
# ---------------------------------------------------------------------------------------

# Face landmarks in CelebA order: left eye, right eye, nose, mouth left, mouth right
# ("left" = smaller x in the image), and a face box (x0, y0, x1, y1).
_FACES: dict[str, tuple[list[tuple[int, int]], Box]] = {
    "astronaut": (
        [(202, 101), (245, 102), (222, 127), (205, 144), (243, 143)],
        (160, 50, 290, 190),
    ),
    "grace_hopper": (
        [(222, 190), (305, 188), (262, 238), (232, 282), (295, 282)],
        (155, 105, 375, 335),
    ),
}

# Chelsea the cat stands in for a bird: the 15 CUB parts (None = not visible) and a box.
_BIRD_PARTS: list[tuple[int, int] | None] = [
    (400, 40),  # back
    (262, 238),  # beak
    (250, 290),  # belly
    (240, 272),  # breast
    (240, 30),  # crown
    (245, 80),  # forehead
    (322, 135),  # left eye (the cat's left: image right)
    None,  # left leg
    (405, 185),  # left wing
    (330, 22),  # nape
    (172, 113),  # right eye
    None,  # right leg
    (60, 170),  # right wing
    None,  # tail
    (255, 262),  # throat
]
_BIRD_BOX: Box = (40, 10, 430, 295)  # 0-based inclusive x1, y1, x2, y2

# Person boxes (x0, y0, x1, y1) the body templates are laid into.
_PERSONS: dict[str, Box] = {"astronaut": (90, 60, 420, 505), "grace_hopper": (100, 70, 440, 590)}

# COCO-18 joints (Tai-Chi, DeepFashion) in person-box coordinates (u right, v down), facing
# the viewer: the person's right side is on the image left.
_COCO18_TEMPLATE: list[tuple[float, float]] = [
    (0.50, 0.12),  # nose
    (0.50, 0.22),  # neck
    (0.30, 0.25),  # right shoulder
    (0.20, 0.40),  # right elbow
    (0.18, 0.55),  # right wrist
    (0.70, 0.25),  # left shoulder
    (0.80, 0.40),  # left elbow
    (0.82, 0.55),  # left wrist
    (0.40, 0.55),  # right hip
    (0.38, 0.75),  # right knee
    (0.37, 0.93),  # right ankle
    (0.60, 0.55),  # left hip
    (0.62, 0.75),  # left knee
    (0.63, 0.93),  # left ankle
    (0.46, 0.09),  # right eye
    (0.54, 0.09),  # left eye
    (0.42, 0.10),  # right ear
    (0.58, 0.10),  # left ear
]
_COCO18_LEGS = (8, 9, 10, 11, 12, 13)

# The 32 Human3.6M joints (skp_core.regression.H36M_JOINT_NAMES order), same frame.
_H36M_TEMPLATE: list[tuple[float, float]] = [
    (0.50, 0.55),  # hip
    (0.42, 0.55),  # right hip
    (0.40, 0.75),  # right knee
    (0.39, 0.92),  # right ankle
    (0.37, 0.95),  # right toe base
    (0.36, 0.97),  # right toe site
    (0.58, 0.55),  # left hip
    (0.60, 0.75),  # left knee
    (0.61, 0.92),  # left ankle
    (0.63, 0.95),  # left toe base
    (0.64, 0.97),  # left toe site
    (0.50, 0.42),  # spine
    (0.50, 0.30),  # thorax
    (0.50, 0.22),  # neck
    (0.50, 0.12),  # head
    (0.50, 0.04),  # head site
    (0.53, 0.27),  # left clavicle
    (0.68, 0.26),  # left shoulder
    (0.78, 0.40),  # left elbow
    (0.82, 0.53),  # left wrist
    (0.84, 0.56),  # left thumb
    (0.85, 0.58),  # left thumb site
    (0.82, 0.57),  # left wrist end
    (0.82, 0.60),  # left wrist end site
    (0.47, 0.27),  # right clavicle
    (0.32, 0.26),  # right shoulder
    (0.22, 0.40),  # right elbow
    (0.18, 0.53),  # right wrist
    (0.16, 0.56),  # right thumb
    (0.15, 0.58),  # right thumb site
    (0.18, 0.57),  # right wrist end
    (0.18, 0.60),  # right wrist end site
]

# Which annotated joints carry the (magenta, cyan) squares, per dataset.
MARKER_JOINTS: dict[str, tuple[int, int]] = {
    "celeba_aligned": (0, 1),  # left eye, right eye
    "celeba_wild": (0, 1),
    "cub_aligned": (6, 10),  # left eye, right eye
    "cub_001": (6, 10),
    "cub_002": (6, 10),
    "cub_003": (6, 10),
    "cub_all": (6, 10),
    "taichi": (0, 5),  # nose, left shoulder
    "deepfashion": (0, 5),
    "human3.6m": (14, 17),  # head, left shoulder
    "unaligned_human3.6m": (14, 17),
}


@cache
def _photo(name: str) -> np.ndarray:
    """A shipped photo as uint8 [H, W, 3] (cached: several fixtures reuse it)."""
    if name == "grace_hopper":
        from matplotlib import cbook

        path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        with Image.open(path) as handle:
            return np.asarray(handle.convert("RGB"))
    import skimage.data

    array = getattr(skimage.data, name)()
    return array


def _person_points(photo: str, template: Sequence[tuple[float, float]]) -> np.ndarray:
    """Template joints laid into the photo's person box, pixel indices [J, 2]."""
    x0, y0, x1, y1 = _PERSONS[photo]
    uv = np.asarray(template, dtype=np.float64)
    return np.stack([x0 + uv[:, 0] * (x1 - x0), y0 + uv[:, 1] * (y1 - y0)], axis=1)


def _resample(photo: np.ndarray, box: Box, size: tuple[int, int]) -> Image.Image:
    """Region `box` (continuous pixel edges) of `photo`, resized to size (W, H).

    Parts of the box outside the photo come out black (like the loaders' crops).
    """
    x0, y0, x1, y1 = box
    ix0, iy0, ix1, iy1 = math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)
    region = Image.fromarray(photo).crop((ix0, iy0, ix1, iy1))
    inner = (x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0)
    return region.resize(size, Image.Resampling.BILINEAR, box=inner)


def _map_points(points: np.ndarray, box: Box, size: tuple[int, int]) -> np.ndarray:
    """Pixel indices in the photo -> integer pixel indices in `_resample(photo, box, size)`."""
    scale = np.array([size[0] / (box[2] - box[0]), size[1] / (box[3] - box[1])])
    mapped = (np.asarray(points, dtype=np.float64) + 0.5 - np.array(box[:2])) * scale - 0.5
    return np.rint(mapped).astype(np.int64)


def _map_box(box: Box, crop: Box, size: tuple[int, int]) -> Box:
    """A continuous box of the photo in the coordinates of the resampled image."""
    sx = size[0] / (crop[2] - crop[0])
    sy = size[1] / (crop[3] - crop[1])
    return (
        (box[0] - crop[0]) * sx,
        (box[1] - crop[1]) * sy,
        (box[2] - crop[0]) * sx,
        (box[3] - crop[1]) * sy,
    )


def _marker_radius(image: Image.Image) -> int:
    """Half-size of a marker square: visible after the loaders shrink the image."""
    return max(2, round(min(image.size) / 40))


def _paint(
    image: Image.Image,
    point: Sequence[int],
    colour: tuple[int, int, int],
    radius: int | None = None,
) -> None:
    """A solid square centred on pixel `point` (its centroid is that pixel's centre)."""
    r = _marker_radius(image) if radius is None else radius
    x, y = int(point[0]), int(point[1])
    ImageDraw.Draw(image).rectangle((x - r, y - r, x + r, y + r), fill=colour)


def _paint_markers(
    image: Image.Image, points: np.ndarray, name: str, radius: int | None = None
) -> None:
    """Magenta and cyan squares on this dataset's two marker joints."""
    magenta, cyan = MARKER_JOINTS[name]
    _paint(image, points[magenta], MAGENTA, radius)
    _paint(image, points[cyan], CYAN, radius)


def _jittered_box(centre: Sequence[float], size: Sequence[float], rng: np.random.Generator) -> Box:
    """Box of `size` around `centre`, moved by up to 5% of its size."""
    cx = centre[0] + rng.uniform(-0.05, 0.05) * size[0]
    cy = centre[1] + rng.uniform(-0.05, 0.05) * size[1]
    return (cx - size[0] / 2, cy - size[1] / 2, cx + size[0] / 2, cy + size[1] / 2)


def _face_photo(index: int) -> str:
    return "astronaut" if index % 2 == 0 else "grace_hopper"


def _save_jpeg(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=95, subsampling=0)


def _save_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _write_text(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


# ---------------------------------------------------------------------------------------
# CelebA
# ---------------------------------------------------------------------------------------

_CELEBA_LANDMARK_HEADER = (
    "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
    "leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
)


def _write_mafl(root: Path, num_train: int, num_test: int) -> None:
    """MAFL split lists; the last image of the table belongs to neither (as in CelebA)."""
    names = [f"{i + 1:06d}.jpg" for i in range(num_train + num_test)]
    _write_text(root / "MAFL" / "training.txt", names[:num_train])
    _write_text(root / "MAFL" / "testing.txt", names[num_train:])


def _landmark_line(name: str, points: np.ndarray) -> str:
    return name + " " + " ".join(f"{int(v):4d}" for v in points.reshape(-1))


def _write_celeba_aligned(
    root: Path, num_train: int, num_test: int, rng: np.random.Generator
) -> None:
    """Aligned-style face crops (89 x 109, half of CelebA's 178 x 218) as PNG."""
    total = num_train + num_test + 1
    size = (89, 109)
    lines = [str(total), _CELEBA_LANDMARK_HEADER]
    for i in range(total):
        photo = _face_photo(i)
        landmarks, (fx0, fy0, fx1, fy1) = _FACES[photo]
        width = (fx1 - fx0) * rng.uniform(1.15, 1.3)
        box = _jittered_box(((fx0 + fx1) / 2, (fy0 + fy1) / 2), (width, width * 109 / 89), rng)
        image = _resample(_photo(photo), box, size)
        points = _map_points(np.array(landmarks), box, size)
        _paint_markers(image, points, "celeba_aligned")
        _save_png(image, root / "Img" / "img_align_celeba_png" / f"{i + 1:06d}.png")
        lines.append(_landmark_line(f"{i + 1:06d}.jpg", points))
    _write_text(root / "Anno" / "list_landmarks_align_celeba.txt", lines)
    _write_mafl(root, num_train, num_test)


def _write_celeba_wild(root: Path, num_train: int, num_test: int, rng: np.random.Generator) -> None:
    """Full photos: every third image is the whole photo (face box < 30%: filtered out)."""
    total = num_train + num_test + 1
    landmark_lines = [str(total), _CELEBA_LANDMARK_HEADER]
    box_lines = [str(total), "image_id x_1 y_1 width height"]
    for i in range(total):
        photo = _face_photo(i)
        source = _photo(photo)
        landmarks, face = _FACES[photo]
        height, width = source.shape[:2]
        if i % 3 == 2:  # the whole photo: a small face
            crop: Box = (0, 0, width, height)
            size = (128, round(128 * height / width))
        else:  # a tight crop: the face fills most of it
            grow = rng.uniform(1.2, 1.35)
            fw, fh = (face[2] - face[0]) * grow, (face[3] - face[1]) * grow
            crop = _jittered_box(((face[0] + face[2]) / 2, (face[1] + face[3]) / 2), (fw, fh), rng)
            size = (int(rng.integers(96, 128)), int(rng.integers(110, 140)))
        image = _resample(source, crop, size)
        points = _map_points(np.array(landmarks), crop, size)
        _paint_markers(image, points, "celeba_wild")
        name = f"{i + 1:06d}.jpg"
        _save_jpeg(image, root / "Img" / "img_celeba" / name)
        landmark_lines.append(_landmark_line(name, points))
        bx0, by0, bx1, by1 = _map_box(face, crop, size)
        box_lines.append(
            f"{name} {round(bx0):4d} {round(by0):4d} {round(bx1 - bx0):4d} {round(by1 - by0):4d}"
        )
    _write_text(root / "Anno" / "list_landmarks_celeba.txt", landmark_lines)
    _write_text(root / "Anno" / "list_bbox_celeba.txt", box_lines)
    _write_mafl(root, num_train, num_test)


# ---------------------------------------------------------------------------------------
# CUB
# ---------------------------------------------------------------------------------------


def _bird_points() -> tuple[np.ndarray, np.ndarray]:
    """Chelsea's parts as pixel indices [15, 2] (invisible -> 0) and visibility [15]."""
    points = np.array([p if p is not None else (0, 0) for p in _BIRD_PARTS], dtype=np.float64)
    visible = np.array([p is not None for p in _BIRD_PARTS])
    return points, visible


def _hide_some(visible: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hide one or two more non-marker parts, so visibility differs between images."""
    visible = visible.copy()
    candidates = [j for j in (0, 2, 3, 5, 8, 12, 14) if visible[j]]
    count = int(rng.integers(1, 3))
    visible[rng.choice(candidates, size=count, replace=False)] = False
    return visible


def _write_cub_aligned(root: Path, num_train: int, num_test: int, rng: np.random.Generator) -> None:
    """AutoLink's cub.h5: 64 px square bird crops, keypoints (y, x) in [0, 1], visibility."""
    parts, visible = _bird_points()
    x1, y1, x2, y2 = _BIRD_BOX
    side = max(x2 - x1, y2 - y1) + 1
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "cub.h5", "w") as handle:
        for split, count in (("train", num_train), ("test", num_test)):
            images, keypoints, visibility = [], [], []
            for _ in range(count):
                size = (64, 64)
                grow = side * rng.uniform(1.0, 1.1)
                box = _jittered_box(((x1 + x2 + 1) / 2, (y1 + y2 + 1) / 2), (grow, grow), rng)
                image = _resample(_photo("chelsea"), box, size)
                points = _map_points(parts, box, size)
                _paint_markers(image, points, "cub_aligned")
                vis = _hide_some(visible, rng)
                normalized = (points + 0.5) / 64.0
                normalized[~vis] = 0.0
                images.append(np.asarray(image).transpose(2, 0, 1))
                keypoints.append(normalized[:, ::-1])  # stored (y, x), as AutoLink writes it
                visibility.append(vis.astype(np.uint8))
            handle.create_dataset(f"{split}_img", data=np.stack(images).astype(np.uint8))
            handle.create_dataset(f"{split}_kp", data=np.stack(keypoints).astype(np.float32))
            handle.create_dataset(f"{split}_vis", data=np.stack(visibility).astype(np.uint8))


_CUB_CLASSES = {
    1: "Black_footed_Albatross",
    2: "Laysan_Albatross",
    3: "Sooty_Albatross",
    4: "Groove_billed_Ani",
}


def _write_cub_parts(root: Path, num_train: int, num_test: int, rng: np.random.Generator) -> None:
    """CUB_200_2011 photos + CMR cachedir .mat files; classes 1-4 (1-3 in every split)."""
    parts, visible = _bird_points()
    data_dir = root / "CUB_200_2011"
    cache_dir = data_dir / "cachedir" / "cub"
    image_id = 0
    for split, count in (("train", num_train), ("test", num_test)):
        records, sfm = [], []
        for k in range(max(count, 3)):
            image_id += 1
            class_id = 1 + k % len(_CUB_CLASSES)
            chelsea = _photo("chelsea")
            height, width = chelsea.shape[:2]
            # A random sub-window of the photo keeping the whole box, at ~40-55% scale.
            left = rng.uniform(0, _BIRD_BOX[0])
            right = rng.uniform(_BIRD_BOX[2] + 1, width)
            crop: Box = (left, 0, right, height)
            scale = rng.uniform(0.4, 0.55)
            size = (round((right - left) * scale), round(height * scale))
            image = _resample(chelsea, crop, size)
            points = _map_points(parts, crop, size)
            _paint_markers(image, points, "cub_all")
            vis = _hide_some(visible, rng)
            bx0, by0, bx1, by1 = _map_box(
                (_BIRD_BOX[0], _BIRD_BOX[1], _BIRD_BOX[2] + 1, _BIRD_BOX[3] + 1), crop, size
            )
            folder = f"{class_id:03d}.{_CUB_CLASSES[class_id]}"
            rel_path = f"{folder}/{_CUB_CLASSES[class_id]}_{image_id:04d}_{700000 + image_id}.jpg"
            _save_jpeg(image, data_dir / "images" / rel_path)
            one_based = np.where(vis[:, None], points + 1, 0).astype(np.float64)
            mask = np.zeros((size[1], size[0]), dtype=np.uint8)
            mask[max(0, round(by0)) : round(by1), max(0, round(bx0)) : round(bx1)] = 1
            records.append(
                {
                    "id": float(image_id),
                    "rel_path": rel_path,
                    "train": float(split == "train"),
                    "test": float(split == "test"),
                    "bbox": {
                        "x1": float(max(1, round(bx0) + 1)),
                        "y1": float(max(1, round(by0) + 1)),
                        "x2": float(min(size[0], round(bx1))),
                        "y2": float(min(size[1], round(by1))),
                    },
                    "height": float(size[1]),
                    "width": float(size[0]),
                    "mask": mask,
                    "class_id": float(class_id),
                    "parts": np.vstack([one_based.T, vis[None].astype(np.float64)]),
                }
            )
            sfm.append(
                {
                    "scale": float(size[0]) / 2,
                    "trans": np.array([size[0] / 2, size[1] / 2]),
                    "rot": np.eye(3),
                }
            )
        _save_mat(cache_dir / "data" / f"{split}_cub_cleaned.mat", "images", records)
        _save_mat(cache_dir / "sfm" / f"anno_{split}.mat", "sfm_anno", sfm)


def _save_mat(path: Path, variable: str, records: list[dict]) -> None:
    """A 1 x N MATLAB struct array (as CMR's files are) from a list of dicts."""
    fields = list(records[0])
    array = np.empty((1, len(records)), dtype=[(field, object) for field in fields])
    for i, record in enumerate(records):
        for field in fields:
            array[0, i][field] = record[field]
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {variable: array})


# ---------------------------------------------------------------------------------------
# Tai-Chi, DeepFashion
# ---------------------------------------------------------------------------------------


def _body_crop(photo: str, rng: np.random.Generator, keep: float) -> Box:
    """A random window of the photo covering fraction >= `keep` of each side."""
    height, width = _photo(photo).shape[:2]
    cw, ch = width * rng.uniform(keep, 1.0), height * rng.uniform(keep, 1.0)
    x0, y0 = rng.uniform(0, width - cw), rng.uniform(0, height - ch)
    return (x0, y0, x0 + cw, y0 + ch)


def _write_taichi(root: Path, num_train: int, num_test: int, rng: np.random.Generator) -> None:
    """Unannotated train frames + annotated 128 px eval frames; tables as .pkl and .csv."""
    for i in range(num_train):
        photo = _face_photo(i)
        crop = _body_crop(photo, rng, 0.8)
        image = _resample(_photo(photo), crop, (96, 96))
        _save_png(image, root / "train" / f"video_{i % 2:02d}" / f"{i:06d}.png")
    for split, count in (("train", num_train), ("test", num_test)):
        rows = []
        for i in range(count):
            photo = _face_photo(i + (split == "test"))
            crop = _body_crop(photo, rng, 0.88)
            size = (128, 128)
            image = _resample(_photo(photo), crop, size)
            points = _map_points(_person_points(photo, _COCO18_TEMPLATE), crop, size)
            _paint_markers(image, points, "taichi")
            outside = ((points < 0) | (points >= 128)).any(axis=1)
            values = points.astype(np.float64)
            values[outside] = -1.0
            values[list(_COCO18_LEGS)] = -1.0  # upper-body photos: no legs annotated
            name = f"{split}_clip{i:03d}_frame{10 * i:05d}.png"
            _save_png(image, root / "eval_images" / "taichi-256" / split / name)
            rows.append((name, values))
        table = pd.DataFrame({"file_name": [n for n, _ in rows], "value": [v for _, v in rows]})
        landmark_dir = root / "landmark"
        landmark_dir.mkdir(parents=True, exist_ok=True)
        table.to_pickle(landmark_dir / f"taichi_{split}_gt.pkl")
        pd.DataFrame(
            {
                "file_name": [n for n, _ in rows],
                "value": [json.dumps(v.tolist()) for _, v in rows],
            }
        ).to_csv(landmark_dir / f"taichi_{split}_gt.csv", index=False)


def _write_deepfashion(root: Path, num_train: int, num_test: int, rng: np.random.Generator) -> None:
    """128 px photos under img/, data_{split}.csv (path in column 2) + data_{split}.json."""
    for split, count in (("train", num_train), ("test", num_test)):
        lines = [",file_name,gender,category"]
        entries = []
        for i in range(count):
            photo = _face_photo(i + (split == "test"))
            crop = _body_crop(photo, rng, 0.97)
            size = (128, 128)
            image = _resample(_photo(photo), crop, size)
            points = _map_points(_person_points(photo, _COCO18_TEMPLATE), crop, size)
            _paint_markers(image, points, "deepfashion")
            gender = "WOMEN" if i % 2 == 0 else "MEN"
            rel = f"{gender}/Jackets_Vests/id_{i + 100 * (split == 'test'):08d}/01_1_front.jpg"
            _save_jpeg(image, root / "img" / rel)
            lines.append(f"{i},{rel},{gender},Jackets_Vests")
            entries.append({"keypoints": points.astype(int).tolist()})
        _write_text(root / f"data_{split}.csv", lines)
        (root / f"data_{split}.json").write_text(json.dumps(entries))


# ---------------------------------------------------------------------------------------
# Human3.6M
# ---------------------------------------------------------------------------------------

_H36M_TRAIN = (1, 5, 6, 7, 8, 9)
_H36M_ACTIONS = ("Directions", "Discussion", "Posing", "Waiting", "Greeting", "Walking")


def _subject_plan(num_train: int, num_test: int) -> list[tuple[int, int]]:
    """(subject, frame number within it) for every frame: train round-robin, then S11."""
    plan = [(_H36M_TRAIN[i % len(_H36M_TRAIN)], i // len(_H36M_TRAIN)) for i in range(num_train)]
    return plan + [(11, i) for i in range(num_test)]


def _write_human36m(root: Path, num_train: int, num_test: int, rng: np.random.Generator) -> None:
    """96 px frames, 0/1 masks, keypoints_2d normalized (x, y); one distractor action."""
    for subject in (*_H36M_TRAIN, 11):
        (root / f"S{subject}" / "WithBackground").mkdir(parents=True, exist_ok=True)
    plan = [*_subject_plan(num_train, num_test), (1, 99)]  # the last one: excluded action
    for k, (subject, number) in enumerate(plan):
        photo = _face_photo(k)
        crop = _body_crop(photo, rng, 0.97)
        size = (96, 96)
        image = _resample(_photo(photo), crop, size)
        points = _map_points(_person_points(photo, _H36M_TEMPLATE), crop, size)
        _paint_markers(image, points, "human3.6m")
        action = "Eating" if number == 99 else _H36M_ACTIONS[k % len(_H36M_ACTIONS)]
        folder = f"{action}.54138969"
        stem = f"{number + 1:06d}"
        base = root / f"S{subject}"
        _save_jpeg(image, base / "WithBackground" / folder / f"{stem}.jpg")
        px0, py0, px1, py1 = _map_box(_PERSONS[photo], crop, size)
        mask = np.zeros((size[1], size[0]), dtype=np.uint8)
        mask[max(0, int(py0) - 3) : int(py1) + 4, max(0, int(px0) - 3) : int(px1) + 4] = 1
        _save_png(Image.fromarray(mask), base / "BackgroudMask" / folder / f"{stem}.png")
        landmark_path = base / "Landmarks" / folder / f"{stem}.mat"
        landmark_path.parent.mkdir(parents=True, exist_ok=True)
        normalized = (points + 0.5) / np.array(size, dtype=np.float64)
        scipy.io.savemat(str(landmark_path), {"keypoints_2d": normalized})


def _write_unaligned_human36m(
    root: Path, num_train: int, num_test: int, rng: np.random.Generator
) -> None:
    """400 px frames (the astronaut pasted on a rocket background) + annot.h5 per action."""
    cameras = (54138969, 55011271)
    sequences: dict[tuple[int, str], list[tuple[int, int, np.ndarray]]] = {}
    for subject in (*_H36M_TRAIN, 11):
        (root / f"S{subject}").mkdir(parents=True, exist_ok=True)
    plan = _subject_plan(num_train, num_test)
    background = Image.fromarray(_photo("rocket")).resize((400, 400), Image.Resampling.BILINEAR)
    for k, (subject, number) in enumerate(plan):
        photo = _face_photo(k)
        source = _photo(photo)
        scale = rng.uniform(0.2, 0.24)
        size = (round(source.shape[1] * scale), round(source.shape[0] * scale))
        person = _resample(source, (0, 0, source.shape[1], source.shape[0]), size)
        offset = rng.integers(130, 170, size=2)
        frame_image = background.copy()
        frame_image.paste(person, (int(offset[0]), int(offset[1])))
        box: Box = (0, 0, source.shape[1], source.shape[0])
        points = _map_points(_person_points(photo, _H36M_TEMPLATE), box, size) + offset
        _paint_markers(frame_image, points, "unaligned_human3.6m", radius=4)
        action = f"{_H36M_ACTIONS[k % len(_H36M_ACTIONS)]}-1"
        camera = cameras[number % 2]
        frame = 1 + 5 * number
        path = root / f"S{subject}" / action / "imageSequence" / str(camera)
        _save_jpeg(frame_image, path / f"img_{frame:06d}.jpg")
        sequences.setdefault((subject, action), []).append((camera, frame, points))
    for (subject, action), rows in sequences.items():
        # Rows of another camera without images, as annot.h5 covers every camera.
        extra = [(58860488, camera_frame, rows[0][2] + 3) for _, camera_frame, _ in rows]
        rows = rows + extra
        with h5py.File(root / f"S{subject}" / action / "annot.h5", "w") as handle:
            handle.create_dataset("camera", data=np.array([r[0] for r in rows], dtype=np.int32))
            handle.create_dataset("frame", data=np.array([r[1] for r in rows], dtype=np.int32))
            handle.create_dataset("pose/2d", data=np.stack([r[2] for r in rows]).astype(np.float32))
            handle.create_dataset("subject", data=np.full(len(rows), subject, dtype=np.int32))


# ---------------------------------------------------------------------------------------
# Custom folder
# ---------------------------------------------------------------------------------------

EXIF_ORIENTATION_TAG = 0x0112


def decompression_bomb(image_format: str, width: int = 16000, height: int = 16000) -> bytes:
    """A real 64 x 64 photo as JPEG or PNG whose header claims ``width`` x ``height``.

    A few hundred bytes that a decoder would expand to width * height pixels (768 MB at the
    default size) before any check on the decoded array: what a hostile or corrupt message can
    send. The PNG's IHDR checksum is recomputed, so only the claimed size is wrong.
    """
    import io
    import struct
    import zlib

    small = _resample(_photo("astronaut"), (0, 0, 512, 512), (64, 64))
    buffer = io.BytesIO()
    small.save(buffer, format=image_format, **({"quality": 30} if image_format == "JPEG" else {}))
    data = bytearray(buffer.getvalue())
    if image_format == "JPEG":
        sof = data.index(b"\xff\xc0")  # baseline start of frame: length, precision, H, W
        data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    elif image_format == "PNG":
        data[16:24] = struct.pack(">II", width, height)  # IHDR data starts at byte 16
        crc = zlib.crc32(bytes(data[12:29]))  # chunk type + 13 data bytes
        data[29:33] = struct.pack(">I", crc)
    else:
        raise ValueError(f"image_format must be JPEG or PNG, got {image_format!r}")
    return bytes(data)


def _write_custom(root: Path, num_train: int, num_test: int, rng: np.random.Generator) -> None:
    """A nested folder of mixed formats and modes, one EXIF-rotated JPEG, one broken JPEG.

    exif_rotated.jpg stores a 120 x 80 landscape image with a magenta square in its top-left
    corner and EXIF orientation 6 (rotate 90 degrees clockwise to display): shown upright it
    is 80 x 120 with the square top-right. logo_rgba.png has a transparent top-left corner
    (stored black, alpha 0). broken.jpg is a truncated JPEG; notes.txt is not an image. Both
    must be ignored (the first with a warning), and so must bomb.jpg, 64 x 64 pixels whose
    header claims 16000 x 16000 (`decompression_bomb`), without being decoded.
    """
    del num_train, num_test, rng  # a fixed set covering every format
    root.mkdir(parents=True, exist_ok=True)
    coffee = _resample(_photo("coffee"), (0, 0, 600, 400), (96, 64))
    _save_jpeg(coffee, root / "kitchen" / "coffee.jpg")
    rocket = _resample(_photo("rocket"), (0, 0, 640, 427), (96, 64))
    _save_png(rocket, root / "kitchen" / "launch" / "rocket.png")
    Image.fromarray(_photo("camera")).resize((64, 64)).save(root / "gray.png")
    logo = np.array(Image.fromarray(_photo("logo")).resize((64, 64)))
    logo[:16, :16] = 0  # a fully transparent (black, alpha 0) top-left corner
    Image.fromarray(logo).save(root / "logo_rgba.png")
    chelsea = _resample(_photo("chelsea"), (0, 0, 451, 300), (90, 60))
    chelsea.quantize(colors=32).save(root / "palette.png")
    chelsea.save(root / "cat.bmp")
    chelsea.save(root / "cat.webp")
    chelsea.save(root / "cat.tif")
    stored = _resample(_photo("grace_hopper"), (0, 100, 512, 441), (120, 80))
    ImageDraw.Draw(stored).rectangle((0, 0, 15, 15), fill=MAGENTA)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    stored.save(root / "EXIF_rotated.JPG", quality=95, exif=exif.tobytes())
    _save_jpeg(_resample(_photo("astronaut"), (0, 0, 512, 512), (64, 64)), root / "broken.jpg")
    data = (root / "broken.jpg").read_bytes()
    (root / "broken.jpg").write_bytes(data[: len(data) // 3])
    (root / "bomb.jpg").write_bytes(decompression_bomb("JPEG"))
    (root / "notes.txt").write_text("not an image\n")


# ---------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------

_WRITERS: dict[str, Callable[[Path, int, int, np.random.Generator], None]] = {
    "celeba_aligned": _write_celeba_aligned,
    "celeba_wild": _write_celeba_wild,
    "cub_aligned": _write_cub_aligned,
    "cub_001": _write_cub_parts,
    "cub_002": _write_cub_parts,
    "cub_003": _write_cub_parts,
    "cub_all": _write_cub_parts,
    "taichi": _write_taichi,
    "deepfashion": _write_deepfashion,
    "human3.6m": _write_human36m,
    "unaligned_human3.6m": _write_unaligned_human36m,
    "custom": _write_custom,
}
FIXTURE_NAMES: tuple[str, ...] = tuple(_WRITERS)


def write_fixture(
    name: str, root: str | Path, *, num_train: int = 6, num_test: int = 3, seed: int = 0
) -> Path:
    """Write a tiny `name` dataset with its real layout under `root`; return `root`.

    num_train / num_test are images per split (CUB writes at least 3 per split so classes
    1-3 each have one; Human3.6M spreads train frames over S1-S9 round-robin). The output
    depends only on (name, num_train, num_test, seed).
    """
    if name not in _WRITERS:
        raise ValueError(f"no fixture for {name!r}; choose one of {', '.join(_WRITERS)}")
    if num_train < 1 or num_test < 1:
        raise ValueError(f"num_train and num_test must be >= 1, got {num_train} and {num_test}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _WRITERS[name](root, int(num_train), int(num_test), np.random.default_rng(seed))
    return root


def write_all_fixtures(
    root: str | Path, *, num_train: int = 6, num_test: int = 3, seed: int = 0
) -> dict[str, Path]:
    """Every fixture, each in root/<name>/; returns {name: its dataset root}."""
    root = Path(root)
    return {
        name: write_fixture(name, root / name, num_train=num_train, num_test=num_test, seed=seed)
        for name in _WRITERS
    }


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write one or every fixture dataset under --out."""
    parser = argparse.ArgumentParser(
        prog="python -m offline_tools.fixtures",
        description="Write tiny benchmark datasets in their real on-disk layouts.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--dataset", choices=FIXTURE_NAMES, help="only this one (DIR/NAME)")
    parser.add_argument("--num-train", type=int, default=6)
    parser.add_argument("--num-test", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = [args.dataset] if args.dataset else list(FIXTURE_NAMES)
    for name in names:
        path = write_fixture(
            name, args.out / name, num_train=args.num_train, num_test=args.num_test, seed=args.seed
        )
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
