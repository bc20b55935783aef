"""Dataset loaders against tiny fixtures in the real on-disk formats (offline_tools.fixtures).

The fixtures paint a magenta and a cyan square centred on two annotated keypoints of every
image; most checks find those squares in a loaded item and require its keypoints to sit on
them, whatever crop, resize or mirror the loader applied.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from offline_tools.datasets import (
    CUB_MIRROR_PERMUTATION,
    CUB_PARTS,
    DATASETS,
    DatasetError,
    list_datasets,
    load_dataset,
    mirror_keypoints,
)
from offline_tools.datasets.base import METRICS, read_image, to_rgb
from offline_tools.datasets.celeba import read_celeba_table
from offline_tools.datasets.human36m import pose_crop_box
from offline_tools.fixtures import FIXTURE_NAMES, MARKER_JOINTS, main, write_fixture

SIZE = 96  # model input size used in these tests (small: fast)
# Marker centroids land within ~0.2 px of exact keypoints; half a source pixel (a dropped
# pixel-centre offset) already moves them > 0.35 px.
MARKER_TOLERANCE_PX = 0.35
ANNOTATED = [name for name in MARKER_JOINTS]
SPLITS = ("train", "regression", "test")


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every fixture dataset, written once for this module."""
    root = tmp_path_factory.mktemp("fixtures")
    return {name: write_fixture(name, root / name) for name in FIXTURE_NAMES}


def _marker(image: torch.Tensor, colour: str, near: np.ndarray, window: float = 0.15):
    """Centroid (normalized x, y) of a painted square near `near`, or None if absent."""
    r, g, b = image.numpy().astype(np.float64)
    score = np.minimum(r, b) - g if colour == "magenta" else np.minimum(g, b) - r
    size = image.shape[-1]
    ys, xs = np.mgrid[0:size, 0:size]
    cx, cy = (xs + 0.5) / size, (ys + 0.5) / size
    weight = np.clip(score - 0.35, 0.0, None)
    weight *= (np.abs(cx - near[0]) < window) & (np.abs(cy - near[1]) < window)
    if weight.sum() < 1e-3:
        return None
    return np.array([(cx * weight).sum(), (cy * weight).sum()]) / weight.sum()


def _marker_error_px(item: dict, joints: tuple[int, int]) -> float:
    """Largest distance (pixels of the item) between a marker and its keypoint."""
    worst = 0.0
    for colour, joint in zip(("magenta", "cyan"), joints, strict=True):
        keypoint = item["keypoints"][joint].numpy()
        found = _marker(item["image"], colour, keypoint)
        if found is None:
            return float("inf")
        worst = max(worst, float(np.linalg.norm(found - keypoint)) * item["image"].shape[-1])
    return worst


def _same_items(a, b) -> bool:
    """Two datasets give identical items (images, keypoints, visibility)."""
    if len(a) != len(b):
        return False
    for i in range(len(a)):
        x, y = a[i], b[i]
        if x.keys() != y.keys():
            return False
        for key in ("image", "keypoints", "visibility"):
            if key in x and not torch.equal(x[key], y[key]):
                return False
    return True


# --- registry ------------------------------------------------------------------------------


def test_registry_names_and_argument_errors(fixtures: dict[str, Path]) -> None:
    assert set(list_datasets()) == set(DATASETS) == set(FIXTURE_NAMES)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet", fixtures["custom"], "train")
    with pytest.raises(ValueError, match="split"):
        load_dataset("custom", fixtures["custom"], "validation")


# --- every loader, every split -----------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", ANNOTATED)
def test_items_have_the_contract_and_keypoints_land_on_the_markers(
    fixtures: dict[str, Path], name: str, split: str
) -> None:
    ds = load_dataset(name, fixtures[name], split, image_size=SIZE)
    assert len(ds) > 0 and ds.name == name and ds.split == split
    assert ds.metric in METRICS
    assert len(ds.landmark_names) == ds.num_landmarks
    if name == "taichi" and split == "train":  # unannotated frames
        assert not ds.has_keypoints
    for i in range(len(ds)):
        item = ds[i]
        image = item["image"]
        assert image.dtype == torch.float32 and image.shape == (3, SIZE, SIZE)
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert item["index"] == i and isinstance(item["path"], str)
        if not ds.has_keypoints:
            assert "keypoints" not in item and "visibility" not in item
            continue
        kp, vis = item["keypoints"], item["visibility"]
        assert kp.dtype == torch.float32 and kp.shape == (ds.num_landmarks, 2)
        assert vis.dtype == torch.float32 and vis.shape == (ds.num_landmarks,)
        assert set(vis.unique().tolist()) <= {0.0, 1.0}
        visible = kp[vis > 0]
        assert ((visible >= 0) & (visible <= 1)).all()
        assert (kp[vis == 0] == 0.5).all()
        assert _marker_error_px(item, MARKER_JOINTS[name]) < MARKER_TOLERANCE_PX


def test_a_keypoint_after_crop_and_resize_is_where_the_annotation_says(
    fixtures: dict[str, Path],
) -> None:
    """CUB: recompute one part's normalized position from the .mat by hand."""
    import scipy.io

    root = fixtures["cub_all"]
    mat = root / "CUB_200_2011" / "cachedir" / "cub" / "data" / "test_cub_cleaned.mat"
    record = scipy.io.loadmat(str(mat), struct_as_record=False, squeeze_me=True)["images"][0]
    box = record.bbox
    x1, y1, x2, y2 = (float(v) - 1 for v in (box.x1, box.y1, box.x2, box.y2))
    w, h = x2 - x1 + 1, y2 - y1 + 1
    bx1, by1 = round(x1 - 0.05 * w), round(y1 - 0.05 * h)
    bx2, by2 = round(x2 + 0.05 * w), round(y2 + 0.05 * h)
    side = max(bx2 - bx1 + 1, by2 - by1 + 1)
    bx1 -= round((side - (bx2 - bx1 + 1)) / 2)
    by1 -= round((side - (by2 - by1 + 1)) / 2)
    beak = record.parts[:2, 1] - 1  # 0-based pixel index of part 2 (beak)
    expected = (beak + 0.5 - np.array([bx1, by1])) / side
    item = load_dataset("cub_all", root, "test", image_size=SIZE)[0]
    np.testing.assert_allclose(item["keypoints"][1].numpy(), expected, atol=1e-6)


# --- CelebA --------------------------------------------------------------------------------


def test_celeba_splits_follow_mafl(fixtures: dict[str, Path]) -> None:
    root = fixtures["celeba_aligned"]
    for split, listing in (("train", "training.txt"), ("test", "testing.txt")):
        names = [Path(n).stem for n in (root / "MAFL" / listing).read_text().split()]
        ds = load_dataset("celeba_aligned", root, split, image_size=SIZE)
        assert [Path(ds[i]["path"]).stem for i in range(len(ds))] == names
    # The table's last image is in neither list.
    table = read_celeba_table(root / "Anno" / "list_landmarks_align_celeba.txt", "t", 10)
    assert len(table) == 6 + 3 + 1


def test_celeba_wild_drops_images_whose_face_box_is_small(fixtures: dict[str, Path]) -> None:
    root = fixtures["celeba_wild"]
    boxes = read_celeba_table(root / "Anno" / "list_bbox_celeba.txt", "t", 4)
    for split, listing in (("train", "training.txt"), ("test", "testing.txt")):
        listed = [Path(n).stem for n in (root / "MAFL" / listing).read_text().split()]
        expected = []
        for stem in listed:
            with Image.open(root / "Img" / "img_celeba" / f"{stem}.jpg") as image:
                area = image.width * image.height
            if boxes[stem][2] * boxes[stem][3] >= 0.3 * area:
                expected.append(stem)
        ds = load_dataset("celeba_wild", root, split, image_size=SIZE)
        kept = [Path(ds[i]["path"]).stem for i in range(len(ds))]
        assert kept == expected
        assert 0 < len(kept) < len(listed)  # the fixture has small-box images in each split
        assert sorted(ds.dropped) == sorted(set(listed) - set(kept))


# --- CUB mirroring -------------------------------------------------------------------------


def test_cub_mirror_permutation_is_a_left_right_involution() -> None:
    perm = np.array(CUB_MIRROR_PERMUTATION)
    assert sorted(perm) == list(range(15)) and (perm[perm] == np.arange(15)).all()
    for j, name in enumerate(CUB_PARTS):
        partner = CUB_PARTS[perm[j]]
        if name.startswith("left_"):
            assert partner == "right_" + name[5:]
        elif not name.startswith("right_"):
            assert partner == name


def test_mirroring_twice_is_identity_and_a_left_part_lands_on_the_right() -> None:
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 1, size=(15, 2))
    vis = (rng.uniform(size=15) > 0.3).astype(np.float64)
    once = mirror_keypoints(kp, vis, CUB_MIRROR_PERMUTATION)
    kp2, vis2 = mirror_keypoints(*once, CUB_MIRROR_PERMUTATION)
    np.testing.assert_allclose(kp2, kp)
    np.testing.assert_array_equal(vis2, vis)
    left_eye, right_eye = CUB_PARTS.index("left_eye"), CUB_PARTS.index("right_eye")
    kp[left_eye], kp[right_eye] = (0.8, 0.3), (0.25, 0.35)  # bird facing us: its left is right
    vis[:] = 1
    mirrored, _ = mirror_keypoints(kp, vis, CUB_MIRROR_PERMUTATION)
    # The physical left-eye point moves to x = 0.2 and is now called the right eye.
    np.testing.assert_allclose(mirrored[right_eye], (0.2, 0.3))
    np.testing.assert_allclose(mirrored[left_eye], (0.75, 0.35))


def test_cub_training_mirror_moves_image_and_relabels_keypoints(
    fixtures: dict[str, Path],
) -> None:
    a, b = MARKER_JOINTS["cub_all"]  # magenta on the left eye, cyan on the right eye
    mirrored = plain = 0
    for seed in range(4):
        ds = load_dataset(
            "cub_all", fixtures["cub_all"], "train", image_size=SIZE, seed=seed, augment=True
        )
        for i in range(len(ds)):
            item = ds[i]
            if _marker_error_px(item, (a, b)) < MARKER_TOLERANCE_PX:
                plain += 1
            else:  # mirrored: the painted left eye is now the right-eye slot
                assert _marker_error_px(item, (b, a)) < MARKER_TOLERANCE_PX
                mirrored += 1
    assert mirrored > 0 and plain > 0


# --- seeding and determinism ---------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:custom. skipped:UserWarning")
@pytest.mark.parametrize("name", ["cub_all", "unaligned_human3.6m", "taichi", "custom"])
def test_seeded_augmentation_is_reproducible(fixtures: dict[str, Path], name: str) -> None:
    def load(seed: int):
        return load_dataset(name, fixtures[name], "train", image_size=SIZE, seed=seed, augment=True)

    assert _same_items(load(7), load(7))
    assert not _same_items(load(7), load(8))
    ds = load(7)
    first = [ds[i]["image"] for i in range(len(ds))]
    ds.set_epoch(1)
    assert any(not torch.equal(first[i], ds[i]["image"]) for i in range(len(ds)))


@pytest.mark.filterwarnings("ignore:custom. skipped:UserWarning")
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_test_split_is_identical_across_seeds(fixtures: dict[str, Path], name: str) -> None:
    def load(seed: int):
        return load_dataset(name, fixtures[name], "test", image_size=SIZE, seed=seed, augment=True)

    assert _same_items(load(0), load(1))


def test_unaligned_test_crop_is_centred_on_the_pose(fixtures: dict[str, Path]) -> None:
    """No jitter on test: the crop is the upstream box, keypoints follow it exactly."""
    import h5py

    root = fixtures["unaligned_human3.6m"]
    ds = load_dataset("unaligned_human3.6m", root, "test", image_size=SIZE, seed=3, augment=True)
    item = ds[0]
    path = Path(item["path"])
    frame = int(path.stem.split("_")[1])
    with h5py.File(path.parents[2] / "annot.h5", "r") as handle:
        row = np.flatnonzero(
            (handle["camera"][()] == int(path.parent.name)) & (handle["frame"][()] == frame)
        )[0]
        pose = handle["pose/2d"][row].astype(np.float64) + 0.5
    with Image.open(path) as image:
        x0, y0, x1, y1 = pose_crop_box(pose, image.width, image.height)
    assert x0 > 0 and y0 > 0 and x1 < 400 and y1 < 400  # an interior crop
    lo, hi = pose.min(axis=0), pose.max(axis=0)
    np.testing.assert_allclose([(x0 + x1) / 2, (y0 + y1) / 2], (lo + hi) / 2, atol=1.0)
    expected = (pose - [x0, y0]) / [x1 - x0, y1 - y0]
    np.testing.assert_allclose(item["keypoints"].numpy(), expected, atol=1e-5)


# --- Tai-Chi pickle policy -------------------------------------------------------------------


def test_taichi_reads_csv_refuses_pickle_without_opt_in(
    fixtures: dict[str, Path], tmp_path: Path
) -> None:
    root = shutil.copytree(fixtures["taichi"], tmp_path / "taichi")
    from_csv = load_dataset("taichi", root, "test", image_size=SIZE)  # both present: CSV
    table = pd.read_csv(root / "landmark" / "taichi_test_gt.csv")
    first = np.array(json.loads(table["value"][0]))
    np.testing.assert_array_equal(from_csv[0]["visibility"].numpy(), (first >= 0).all(axis=1))
    assert from_csv[0]["visibility"].sum() < 18  # the fixture has missing (-1) joints

    (root / "landmark" / "taichi_test_gt.csv").unlink()
    with pytest.raises(DatasetError) as error:
        load_dataset("taichi", root, "test", image_size=SIZE)
    message = str(error.value)
    assert "allow_pickle" in message and "taichi_test_gt.csv" in message
    from_pickle = load_dataset("taichi", root, "test", image_size=SIZE, allow_pickle=True)
    assert _same_items(from_csv, from_pickle)

    (root / "landmark" / "taichi_test_gt.pkl").unlink()
    with pytest.raises(DatasetError, match=r"taichi_test_gt\.csv"):
        load_dataset("taichi", root, "test", allow_pickle=True)


# --- Human3.6M ---------------------------------------------------------------------------


def test_human36m_masks_background_and_skips_other_actions(fixtures: dict[str, Path]) -> None:
    ds = load_dataset("human3.6m", fixtures["human3.6m"], "train", image_size=SIZE)
    assert all("Eating" not in ds[i]["path"] for i in range(len(ds)))
    assert any((fixtures["human3.6m"] / "S1" / "WithBackground").glob("Eating*"))
    image = ds[0]["image"]
    assert image[:, :3, :3].max() == 0.0  # a corner outside the person mask is black
    assert image.mean() > 0.1


# --- custom folder -------------------------------------------------------------------------


def test_custom_folder_recursion_formats_exif_and_corrupt_files(
    fixtures: dict[str, Path],
) -> None:
    root = fixtures["custom"]
    with pytest.warns(UserWarning, match="skipped 2 unreadable") as caught:
        ds = load_dataset("custom", root, "train", image_size=SIZE)
    assert ds.skipped == [root / "bomb.jpg", root / "broken.jpg"] and not ds.has_keypoints
    assert "bomb.jpg: its header says 16000x16000" in str(caught[0].message)
    names = [Path(ds[i]["path"]).relative_to(root).as_posix() for i in range(len(ds))]
    assert names == sorted(names) and "kitchen/launch/rocket.png" in names
    assert not any(n.endswith((".txt", "broken.jpg", "bomb.jpg")) for n in names)
    assert {Path(n).suffix.lower() for n in names} >= {".jpg", ".png", ".bmp", ".webp", ".tif"}
    items = {n: ds[i] for i, n in enumerate(names)}
    for item in items.values():
        assert item["image"].shape == (3, SIZE, SIZE) and "keypoints" not in item
    assert items["EXIF_rotated.JPG"]["original_size"].tolist() == [120, 80]  # upright H, W
    gray = items["gray.png"]["image"]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert (items["logo_rgba.png"]["image"][:, :10, :10] == 1.0).all()  # transparent -> white
    # EXIF orientation 6: the stored top-left square shows top-right once upright.
    found = _marker(items["EXIF_rotated.JPG"]["image"], "magenta", np.array([0.5, 0.5]), 0.5)
    assert found is not None and found[0] > 0.8 and found[1] < 0.2
    upright = read_image(root / "EXIF_rotated.JPG", "custom")
    assert upright.size == (80, 120)


def test_to_rgb_handles_16_bit_and_palette_modes() -> None:
    deep = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert deep.mode.startswith("I;16")
    assert np.asarray(to_rgb(deep)).min() == 255
    palette = Image.new("RGB", (4, 4), (10, 200, 30)).quantize(colors=4)
    assert to_rgb(palette).getpixel((0, 0)) == (10, 200, 30)


# --- errors name the expected path -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "relative"),
    [
        ("celeba_aligned", "Anno/list_landmarks_align_celeba.txt"),
        ("celeba_wild", "Anno/list_bbox_celeba.txt"),
        ("cub_aligned", "cub.h5"),
        ("cub_all", "CUB_200_2011/cachedir/cub/data/test_cub_cleaned.mat"),
        ("deepfashion", "data_test.json"),
        ("human3.6m", "S11/WithBackground"),
        ("unaligned_human3.6m", "S11"),
        ("taichi", "eval_images/taichi-256/test"),
    ],
)
def test_missing_files_raise_errors_naming_the_expected_path(
    fixtures: dict[str, Path], tmp_path: Path, name: str, relative: str
) -> None:
    root = shutil.copytree(fixtures[name], tmp_path / name)
    target = root / relative
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DatasetError) as error:
        load_dataset(name, root, "test")
    assert str(target) in str(error.value) and name in str(error.value)


def test_missing_image_and_missing_root_errors(fixtures: dict[str, Path], tmp_path: Path) -> None:
    root = shutil.copytree(fixtures["deepfashion"], tmp_path / "deepfashion")
    ds = load_dataset("deepfashion", root, "test", image_size=SIZE)
    missing = ds[0]["path"]
    Path(missing).unlink()
    with pytest.raises(DatasetError, match=re.escape(missing)):
        ds[0]
    with pytest.raises(DatasetError, match="nowhere"):
        load_dataset("custom", tmp_path / "nowhere", "train")


# --- plumbing ----------------------------------------------------------------------------


def test_h5_dataset_pickles_and_collates(fixtures: dict[str, Path]) -> None:
    ds = load_dataset("cub_aligned", fixtures["cub_aligned"], "train", image_size=SIZE)
    first = ds[0]
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker receives
    assert torch.equal(clone[0]["image"], first["image"])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, SIZE, SIZE) and batch["keypoints"].shape == (4, 15, 2)


def test_fixture_cli_is_deterministic(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path / "a"), "--dataset", "celeba_wild", "--seed", "5"]) == 0
    write_fixture("celeba_wild", tmp_path / "b", seed=5)
    for relative in ("Anno/list_landmarks_celeba.txt", "Anno/list_bbox_celeba.txt"):
        assert (tmp_path / "a" / "celeba_wild" / relative).read_bytes() == (
            tmp_path / "b" / relative
        ).read_bytes()
    with pytest.raises(ValueError, match="no fixture"):
        write_fixture("imagenet", tmp_path / "c")


def test_read_image_refuses_a_bomb_before_decoding(fixtures: dict[str, Path]) -> None:
    with pytest.raises(
        DatasetError, match=r"refused image .*bomb\.jpg: its header says 16000x16000"
    ):
        read_image(fixtures["custom"] / "bomb.jpg", "custom")


def test_human36m_validation_split_holds_out_s9(fixtures: dict[str, Path]) -> None:
    root = fixtures["human3.6m"]

    def subjects(split: str, validation: bool) -> set[str]:
        ds = load_dataset("human3.6m", root, split, image_size=SIZE, validation=validation)
        return {Path(ds[i]["path"]).relative_to(root).parts[0] for i in range(len(ds))}

    assert subjects("train", False) == {"S1", "S5", "S6", "S7", "S8", "S9"}
    assert subjects("test", False) == {"S11"}
    assert subjects("train", True) == subjects("regression", True) == {"S1", "S5", "S6", "S7", "S8"}
    assert subjects("test", True) == {"S9"}
    with pytest.raises(DatasetError, match="no validation split"):
        load_dataset(
            "unaligned_human3.6m", fixtures["unaligned_human3.6m"], "test", validation=True
        )
