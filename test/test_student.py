"""The distilled student's network, its ONNX export into a bundle, and the checks on load."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import skimage.data
import torch

from skp_core.bundle import BundleError, load_bundle, save_bundle
from skp_core.student_bundle import (
    STUDENT_JSON,
    STUDENT_ONNX,
    export_onnx,
    load_student,
    save_student,
    teacher_hash,
)
from skp_core.student_detector import StudentDetector
from skp_core.student_network import StudentConfig, StudentNet, soft_argmax
from skp_ros.tiny_bundle import make_tiny_bundle


def _net(k: int, size: int = 64, seed: int = 0) -> StudentNet:
    torch.manual_seed(seed)
    net = StudentNet(StudentConfig(num_keypoints=k, input_size=size, width=8))
    return net.eval()


@pytest.fixture
def distilled(tmp_path):
    path = make_tiny_bundle(tmp_path / "bundle")
    bundle = load_bundle(path)
    net = _net(bundle.num_keypoints)
    save_student(path, bundle, net, agreement={"pck@0.05": None})
    return path, bundle, net


def test_soft_argmax_finds_a_sharp_peak_at_its_pixel_centre():
    logits = torch.full((1, 8, 16), -50.0)
    logits[0, 3, 11] = 50.0
    (xy,), _ = soft_argmax(logits)
    assert xy.tolist() == pytest.approx([(11 + 0.5) / 16, (3 + 0.5) / 8], abs=1e-6)


def test_onnxruntime_equals_torch_and_export_is_byte_stable():
    import onnxruntime

    net = _net(5)
    data = export_onnx(net)
    assert data == export_onnx(net)
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    outputs = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        expected = net.keypoints(x)
    for got, want in zip(outputs, expected, strict=True):
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=0)


def test_student_detector_reads_a_photo_in_its_pixels(distilled):
    path, bundle, _ = distilled
    detector = StudentDetector.from_bundle(path)
    photo = skimage.data.astronaut()[:300, :400]
    (det,) = detector.detect(photo, return_maps=True)
    assert det.pixels.shape == (bundle.num_keypoints, 2)
    assert det.image_size == (300, 400)
    assert ((det.pixels >= -0.5) & (det.pixels <= [399.5, 299.5])).all()
    assert ((det.scores > 0) & (det.scores < 1)).all()
    assert det.maps.shape == (bundle.num_keypoints, 16, 16)
    assert not det.degenerate.any()
    again = detector.detect([photo, photo[:100]])
    np.testing.assert_array_equal(again[0].pixels, det.pixels)


def test_a_corrupt_onnx_file_is_refused_in_one_line(distilled):
    path, bundle, _ = distilled
    data = bytearray((path / STUDENT_ONNX).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / STUDENT_ONNX).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"does not match student\.json") as info:
        load_student(path, bundle)
    assert "\n" not in str(info.value)


def test_a_truncated_onnx_with_its_hash_is_refused_as_invalid(distilled):
    path, bundle, _ = distilled
    data = (path / STUDENT_ONNX).read_bytes()[:5000]
    (path / STUDENT_ONNX).write_bytes(data)
    doc = json.loads((path / STUDENT_JSON).read_text())
    doc["onnx"]["sha256"] = hashlib.sha256(data).hexdigest()
    (path / STUDENT_JSON).write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="is not a valid ONNX model") as info:
        load_student(path, bundle)
    assert "\n" not in str(info.value)


def test_a_student_of_another_teacher_or_shape_is_refused(distilled, tmp_path):
    path, bundle, _ = distilled
    other = load_bundle(make_tiny_bundle(tmp_path / "other", seed=3))
    assert teacher_hash(other) != teacher_hash(bundle)
    with pytest.raises(BundleError, match="distilled from another teacher"):
        load_student(path, other)
    doc = json.loads((path / STUDENT_JSON).read_text())
    doc["student"]["input_size"] = 128  # the graph still takes 64 x 64
    (path / STUDENT_JSON).write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="takes inputs"):
        load_student(path, bundle)


def test_a_bundle_without_student_says_how_to_make_one(tmp_path):
    path = make_tiny_bundle(tmp_path / "bundle")
    with pytest.raises(BundleError, match="make one with skp-distill"):
        load_student(path, load_bundle(path))


def test_resaving_a_bundle_with_a_student_replaces_it(distilled):
    path, bundle, _ = distilled
    save_bundle(bundle, path)
    assert not (path / STUDENT_JSON).exists()
    assert load_bundle(path).num_keypoints == bundle.num_keypoints
