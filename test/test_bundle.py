"""Bundle artifact: exact round trip, atomic overwrite, and a clear error for every breakage."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from skp_core.bundle import (
    BUNDLE_FORMAT_VERSION,
    JSON_FILE,
    TENSORS_FILE,
    Bundle,
    BundleError,
    check_compatible,
    default_colors,
    describe,
    load_bundle,
    save_bundle,
)

FINGERPRINT = {"cross_attention_dim": 32, "block_out_channels": [32, 64], "attention_head_dim": 8}


def make_bundle(regressor: bool = True, tokens: int = 12, dim: int = 32) -> Bundle:
    g = torch.Generator().manual_seed(0)
    k, j = 4, 3
    return Bundle(
        context=torch.randn(tokens, dim, generator=g),
        selected_indices=torch.tensor([7, 2, 11, 0]),
        regressor=torch.randn(2 * k, 2 * j, generator=g) if regressor else None,
        landmark_names=["left_eye", "right_eye", "nose"] if regressor else None,
        backbone={"model": "tiny", "fingerprint": FINGERPRINT},
        method={"layers": ["up_blocks.1.attentions.0"], "feature_resolution": 16, "sigma": 2.0},
        training={"seed": 3, "steps_done": 20, "lr": 0.005},
        dataset={"name": "custom", "root": "/data/x"} if regressor else None,
        metrics={"inter_eye_distance": 3.6} if regressor else None,
    )


def bits(x: torch.Tensor) -> torch.Tensor:
    """The raw bit patterns, so the comparison is exact even for NaN payloads or -0.0."""
    return x.view(torch.int32) if x.dtype == torch.float32 else x


def assert_same(a: Bundle, b: Bundle) -> None:
    for name in ("context", "selected_indices", "regressor"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None:
            assert y is None
            continue
        assert x.dtype == y.dtype and x.shape == y.shape
        assert torch.equal(bits(x), bits(y))
    for name in (
        "landmark_names",
        "keypoint_names",
        "keypoint_colors",
        "backbone",
        "method",
        "training",
        "dataset",
        "metrics",
        "format_version",
        "created",
        "skp_version",
    ):
        assert getattr(a, name) == getattr(b, name), name


@pytest.mark.parametrize("with_regressor", [True, False])
def test_round_trip_is_exact(tmp_path: Path, with_regressor: bool) -> None:
    b = make_bundle(with_regressor)
    b.context[0, 0] = float.fromhex("0x1.fffffep-127")  # a subnormal survives
    b.context[0, 1] = -0.0
    out = save_bundle(b, tmp_path / "bundle")
    assert out == (tmp_path / "bundle").absolute()
    loaded = load_bundle(out, expected_context_dim=32, expected_fingerprint=FINGERPRINT)
    assert_same(b, loaded)
    assert loaded.keypoint_names == ["kp0", "kp1", "kp2", "kp3"]
    assert loaded.keypoint_colors == default_colors(4)
    assert all(isinstance(c, tuple) for c in loaded.keypoint_colors)
    assert loaded.format_version == BUNDLE_FORMAT_VERSION
    assert_same(loaded, load_bundle(out / JSON_FILE))  # the json path works too


def test_only_json_and_safetensors_are_written(tmp_path: Path) -> None:
    path = save_bundle(make_bundle(), tmp_path / "b")
    assert sorted(os.listdir(path)) == [JSON_FILE, TENSORS_FILE]
    assert sorted(os.listdir(tmp_path)) == ["b"]  # no temporary leftovers
    json.loads((path / JSON_FILE).read_text())
    names = set(safetensors.torch.load_file(path / TENSORS_FILE))
    assert names == {"context", "selected_indices", "regressor"}


def test_custom_names_and_colors(tmp_path: Path) -> None:
    b = make_bundle()
    b.keypoint_names = ["a", "b", "c", "d"]
    b.keypoint_colors = [(1, 2, 3), (4, 5, 6), (7, 8, 9), (255, 0, 0)]
    loaded = load_bundle(save_bundle(b, tmp_path / "b"))
    assert loaded.keypoint_names == b.keypoint_names
    assert loaded.keypoint_colors == b.keypoint_colors


def test_default_colors_distinct_beyond_palette() -> None:
    colors = default_colors(40)
    assert len(set(colors)) == 40
    assert all(0 <= v <= 255 for c in colors for v in c)


def test_overwrite_replaces_bundle(tmp_path: Path) -> None:
    path = save_bundle(make_bundle(True), tmp_path / "b")
    save_bundle(make_bundle(False), path)
    assert load_bundle(path).regressor is None
    assert sorted(os.listdir(tmp_path)) == ["b"]


@pytest.mark.parametrize("fail_on", ["any", "new_into_place"])
def test_failed_overwrite_keeps_old_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_on: str
) -> None:
    path = save_bundle(make_bundle(True), tmp_path / "b")
    before = {n: (path / n).read_bytes() for n in os.listdir(path)}
    real_replace = os.replace

    def flaky_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if fail_on == "any" or ".tmp-" in os.fspath(src):
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(BundleError, match="unchanged"):
        save_bundle(make_bundle(False), path)
    monkeypatch.undo()
    assert {n: (path / n).read_bytes() for n in os.listdir(path)} == before
    assert load_bundle(path).regressor is not None
    assert sorted(os.listdir(tmp_path)) == ["b"]


def test_failed_serialization_keeps_old_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_bundle(make_bundle(True), tmp_path / "b")
    before = (path / TENSORS_FILE).read_bytes()

    real_write = Path.write_bytes

    def broken_write(file: Path, data: bytes) -> int:
        real_write(file, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", broken_write)
    with pytest.raises(BundleError):
        save_bundle(make_bundle(False), path)
    assert (path / TENSORS_FILE).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["b"]


def test_refuses_to_replace_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(BundleError, match=r"notes\.txt"):
        save_bundle(make_bundle(), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: setattr(b, "context", b.context.double()), "float32"),
        (lambda b: setattr(b, "context", torch.full((3, 4), float("nan"))), "NaN"),
        (lambda b: setattr(b, "selected_indices", torch.tensor([0, 0, 1, 2])), "duplicates"),
        (lambda b: setattr(b, "selected_indices", torch.tensor([0, 1, 2, 99])), "outside"),
        (lambda b: setattr(b, "regressor", torch.zeros(5, 6)), "regressor"),
        (lambda b: setattr(b, "landmark_names", ["a"]), "landmark_names"),
        (lambda b: setattr(b, "keypoint_names", ["a", "a", "b", "c"]), "duplicates"),
        (lambda b: setattr(b, "keypoint_colors", [(0, 0, 256)] * 4), "RGB"),
        (lambda b: setattr(b, "metrics", {"x": float("nan")}), "NaN"),
        (lambda b: setattr(b, "training", {"x": object()}), "JSON"),
        (lambda b: setattr(b, "format_version", 2), "format_version"),
    ],
)
def test_save_rejects_invalid_bundle(
    tmp_path: Path, mutate: Callable[[Bundle], None], message: str
) -> None:
    b = make_bundle()
    mutate(b)
    with pytest.raises(BundleError, match=message):
        save_bundle(b, tmp_path / "b")
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- corruption of a saved bundle


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    doc = json.loads((path / JSON_FILE).read_text())
    edit(doc)
    (path / JSON_FILE).write_text(json.dumps(doc))


def _retensor(path: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Rewrite the tensors AND the checksum, as a tool that bypasses validation would."""
    tensors = safetensors.torch.load_file(path / TENSORS_FILE)
    edit(tensors)
    data = safetensors.torch.save({k: v.contiguous() for k, v in tensors.items()})
    (path / TENSORS_FILE).write_bytes(data)
    import hashlib

    _edit_json(path, lambda d: d["tensors"].update(sha256=hashlib.sha256(data).hexdigest()))


def _truncate(path: Path, size: int) -> None:
    data = (path / TENSORS_FILE).read_bytes()
    (path / TENSORS_FILE).write_bytes(data[:size])


def _flip(path: Path, offset: int) -> None:
    data = bytearray((path / TENSORS_FILE).read_bytes())
    data[offset] ^= 0x40
    (path / TENSORS_FILE).write_bytes(bytes(data))


def _set(key: str, value: object) -> Callable[[Path], None]:
    return lambda p: _edit_json(p, lambda d: d.__setitem__(key, value))


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing json": (lambda p: (p / JSON_FILE).unlink(), "missing"),
    "missing tensors": (lambda p: (p / TENSORS_FILE).unlink(), "missing"),
    "invalid json": (lambda p: (p / JSON_FILE).write_text('{"format": '), "not valid JSON"),
    "json not object": (lambda p: (p / JSON_FILE).write_text("[1, 2]"), "JSON object"),
    "json binary": (lambda p: (p / JSON_FILE).write_bytes(b"\xff\xfe\x00"), "UTF-8"),
    "not a bundle": (_set("format", "something-else"), "not an skp bundle"),
    "newer format": (_set("format_version", BUNDLE_FORMAT_VERSION + 1), "upgrade skp"),
    "bad format version": (_set("format_version", "1"), "format_version"),
    "no checksum": (lambda p: _edit_json(p, lambda d: d.pop("tensors")), "tensors"),
    "wrong checksum": (
        lambda p: _edit_json(p, lambda d: d["tensors"].update(sha256="0" * 64)),
        "sha256",
    ),
    "truncated tensors": (lambda p: _truncate(p, 300), "truncated"),
    "truncated to header": (lambda p: _truncate(p, 5), "truncated"),
    "empty tensors file": (lambda p: _truncate(p, 0), "truncated"),
    "flipped data byte": (lambda p: _flip(p, -10), "sha256"),
    "flipped header length": (lambda p: _flip(p, 3), "header"),
    "flipped header json": (lambda p: _flip(p, 8), "header"),
    "missing tensor": (lambda p: _retensor(p, lambda t: t.pop("context")), "context"),
    "extra tensor": (lambda p: _retensor(p, lambda t: t.update(x=torch.zeros(1))), "unexpected"),
    "nan context": (
        lambda p: _retensor(p, lambda t: t["context"].__setitem__((0, 0), float("nan"))),
        "NaN",
    ),
    "inf regressor": (
        lambda p: _retensor(p, lambda t: t["regressor"].__setitem__((1, 1), float("inf"))),
        "inf",
    ),
    "context 3-D": (
        lambda p: _retensor(p, lambda t: t.update(context=t["context"][None])),
        "2-D",
    ),
    "context float16": (
        lambda p: _retensor(p, lambda t: t.update(context=t["context"].half())),
        "float32",
    ),
    "indices int32": (
        lambda p: _retensor(p, lambda t: t.update(selected_indices=t["selected_indices"].int())),
        "int64",
    ),
    "indices out of range": (
        lambda p: _retensor(p, lambda t: t.update(selected_indices=torch.tensor([1, 2, 3, 12]))),
        r"outside the token range \[0, 12\)",
    ),
    "negative index": (
        lambda p: _retensor(p, lambda t: t.update(selected_indices=torch.tensor([-1, 2, 3, 4]))),
        "outside",
    ),
    "duplicate indices": (
        lambda p: _retensor(p, lambda t: t.update(selected_indices=torch.tensor([1, 2, 2, 4]))),
        "duplicates",
    ),
    "regressor rows": (
        lambda p: _retensor(p, lambda t: t.update(regressor=t["regressor"][:6])),
        "K = 4",
    ),
    "regressor vs landmark names": (
        lambda p: _retensor(p, lambda t: t.update(regressor=t["regressor"][:, :4])),
        "landmark_names",
    ),
    "names count": (_set("keypoint_names", ["a", "b"]), "keypoint_names"),
    "names type": (_set("keypoint_names", "abcd"), "keypoint_names"),
    "empty names": (_set("keypoint_names", []), "empty"),
    "colors": (_set("keypoint_colors", [[1, 2]] * 4), "RGB"),
    "colors type": (_set("keypoint_colors", {"a": 1}), "keypoint_colors"),
    "method type": (_set("method", [1]), "method"),
    "missing field": (lambda p: _edit_json(p, lambda d: d.pop("training")), "training"),
    "edited indices in json": (_set("selected_indices", [0, 1, 2, 3]), "do not belong"),
    "num_tokens in method": (
        lambda p: _edit_json(p, lambda d: d["method"].update(num_tokens=500)),
        "num_tokens",
    ),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_gives_clear_bundle_error(tmp_path: Path, name: str) -> None:
    corrupt, message = CORRUPTIONS[name]
    path = save_bundle(make_bundle(), tmp_path / "b")
    corrupt(path)
    with pytest.raises(BundleError, match=message) as info:
        load_bundle(path)
    assert str(path) in str(info.value)  # names the file
    assert ";" in str(info.value)  # ... and says what to do


def test_missing_directory_and_file_path(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match="not a bundle directory"):
        load_bundle(tmp_path / "f.bin")


def test_missing_directory_points_at_backup_of_interrupted_save(tmp_path: Path) -> None:
    path = save_bundle(make_bundle(), tmp_path / "b")
    backup = tmp_path / ".b.old-123"
    os.replace(path, backup)  # what a crash between the two renames leaves behind
    with pytest.raises(BundleError, match=r"\.b\.old-123"):
        load_bundle(path)


def test_every_truncation_and_byte_flip_is_a_bundle_error(tmp_path: Path) -> None:
    """Fuzz: whatever the damage, the only exception a caller sees is BundleError."""
    path = save_bundle(make_bundle(), tmp_path / "b")
    good = (path / TENSORS_FILE).read_bytes()
    good_json = (path / JSON_FILE).read_bytes()
    rng = np.random.default_rng(0)
    sizes = sorted({*range(0, 300, 7), *rng.integers(0, len(good), 30).tolist()})
    for size in sizes:
        (path / TENSORS_FILE).write_bytes(good[:size])
        with pytest.raises(BundleError):
            load_bundle(path)
    for offset in rng.integers(0, len(good), 60).tolist():
        data = bytearray(good)
        data[offset] ^= 1 << int(rng.integers(0, 8))
        (path / TENSORS_FILE).write_bytes(bytes(data))
        with pytest.raises(BundleError):
            load_bundle(path)
    (path / TENSORS_FILE).write_bytes(good)
    for offset in rng.integers(0, len(good_json), 60).tolist():
        data = bytearray(good_json)
        data[offset] = int(rng.integers(0, 256))
        (path / JSON_FILE).write_bytes(bytes(data))
        try:
            load_bundle(path)  # a harmless edit (e.g. inside "created") may still load
        except BundleError:
            pass


def test_context_dim_mismatch(tmp_path: Path) -> None:
    b = make_bundle(dim=768)
    b.backbone = {"model": "sd-legacy/stable-diffusion-v1-5", "fingerprint": {"x": 1}}
    path = save_bundle(b, tmp_path / "b")
    with pytest.raises(BundleError) as info:
        load_bundle(path, expected_context_dim=32, backbone_name="tiny")
    msg = str(info.value)
    assert "cross-attention dim 768 (sd-legacy/stable-diffusion-v1-5)" in msg
    assert "has 32 (tiny)" in msg
    assert str(path) in msg


def test_fingerprint_mismatch_lists_differing_keys(tmp_path: Path) -> None:
    path = save_bundle(make_bundle(), tmp_path / "b")
    live = dict(FINGERPRINT, block_out_channels=(32, 128), attention_head_dim=4, new_key=1)
    with pytest.raises(BundleError) as info:
        load_bundle(path, expected_fingerprint=live)
    msg = str(info.value)
    assert "attention_head_dim" in msg and "block_out_channels" in msg
    assert "cross_attention_dim" not in msg and "new_key" not in msg
    # tuples vs lists, keys only on one side and where the weights came from are no mismatch
    load_bundle(path, expected_fingerprint=dict(FINGERPRINT, block_out_channels=(32, 64), z=0))
    load_bundle(path, expected_fingerprint=dict(FINGERPRINT, model_id="/models/sd15-copy"))


def test_nested_fingerprint_difference_is_named(tmp_path: Path) -> None:
    b = make_bundle()
    b.backbone = {"fingerprint": {"model_id": "tiny", "unet": {"layers_per_block": 1, "a": 0}}}
    path = save_bundle(b, tmp_path / "b")
    live = {"model_id": "other", "unet": {"layers_per_block": 2, "b": 0}}
    with pytest.raises(BundleError, match=r"unet\.layers_per_block: bundle 1 vs loaded 2") as info:
        load_bundle(path, expected_fingerprint=live)
    assert "trained for backbone tiny" in str(info.value)
    assert "(other)" in str(info.value)


def test_check_compatible_directly() -> None:
    b = make_bundle()
    check_compatible(b, 32, FINGERPRINT)
    check_compatible(b, None, None)
    with pytest.raises(BundleError, match="768"):
        check_compatible(b, 768, None)
    with pytest.raises(BundleError, match="attention_head_dim"):
        check_compatible(b, 32, {"attention_head_dim": 16})


def test_describe_mentions_the_essentials() -> None:
    text = describe(make_bundle())
    for part in ("tiny", "32", "12 learned", "4 selected", "left_eye", "inter_eye_distance"):
        assert part in text
    assert "regressor: none" in describe(make_bundle(regressor=False))


def test_validate_and_properties() -> None:
    b = make_bundle()
    b.validate()
    assert (b.num_tokens, b.context_dim, b.num_keypoints, b.num_landmarks) == (12, 32, 4, 3)
    assert make_bundle(regressor=False).num_landmarks is None
    b.selected_indices = torch.tensor([0, 1, 2, 12])
    with pytest.raises(BundleError, match="outside"):
        b.validate()


def test_no_wall_clock_unless_source_date_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = save_bundle(make_bundle(), tmp_path / "a")
    second = save_bundle(make_bundle(), tmp_path / "b")
    for name in (JSON_FILE, TENSORS_FILE):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert load_bundle(first).created is None
    assert "created" not in describe(load_bundle(first))

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    stamped = load_bundle(save_bundle(make_bundle(), tmp_path / "c"))
    assert stamped.created == "2023-11-14T22:13:20+00:00"
    assert "created 2023-11-14T22:13:20+00:00" in describe(stamped)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(BundleError, match="SOURCE_DATE_EPOCH='yesterday'"):
        make_bundle()


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        (1e30, r"context values reach [0-9.]+e\+30 .* within \+-1000"),
        (0.0, "all 12 context tokens are identical"),
    ],
)
def test_absurd_context_is_refused_at_load(tmp_path: Path, scale: float, message: str) -> None:
    path = save_bundle(make_bundle(), tmp_path / "b")
    _retensor(path, lambda t: t.update(context=t["context"] * scale))
    with pytest.raises(BundleError, match=message):
        load_bundle(path)
    b = make_bundle()
    b.context = b.context * scale
    with pytest.raises(BundleError, match=message):
        save_bundle(b, tmp_path / "c")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_views", 1_000_000_000, "method.num_views must be between 1 and 256"),
        ("feature_resolution", -4, "method.feature_resolution must be between 1 and 2048"),
        ("view_space", "pixels", "method.view_space must be one of"),
        ("warp_speed", 9, "method.unknown settings: warp_speed"),
    ],
)
def test_method_out_of_range_is_refused_at_load(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    path = save_bundle(make_bundle(), tmp_path / "b")
    _edit_json(path, lambda d: d["method"].update({field: value}))
    with pytest.raises(BundleError, match=message) as caught:
        load_bundle(path)
    assert "\n" not in str(caught.value) and JSON_FILE in str(caught.value)
