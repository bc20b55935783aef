"""Distillation on the tiny teacher: labels once, trains, resumes exactly, exports to ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skp_core.bundle import load_bundle
from skp_core.detector import KeypointDetector
from skp_core.distill import Distiller, DistillSettings, agreement, label_images
from skp_core.student_bundle import save_student
from skp_core.student_detector import StudentDetector
from skp_core.student_network import StudentConfig
from skp_ros.camera_sweep import sample_photo, sweep_frame
from skp_ros.tiny_bundle import make_tiny_bundle


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = make_tiny_bundle(
        tmp_path_factory.mktemp("teacher") / "bundle",
        method_overrides={"num_views": 2, "image_size": 128},
    )
    detector = KeypointDetector.from_bundle(path)
    photo = sample_photo("astronaut")
    frames = [sweep_frame(photo, i, 160, 120) for i in range(8)]
    labels = label_images(detector, frames, input_size=64)
    detector.close()
    return path, frames, labels


def _settings(steps: int) -> DistillSettings:
    return DistillSettings(steps=steps, batch_size=4, checkpoint_every=2, seed=5)


def test_labels_are_the_teachers_keypoints_of_each_image(teacher):
    path, frames, labels = teacher
    detector = KeypointDetector.from_bundle(path)
    (det,) = detector.detect(frames[3])
    detector.close()
    assert labels.images.shape == (8, 3, 64, 64) and labels.images.dtype == torch.uint8
    np.testing.assert_allclose(labels.keypoints[3].numpy(), det.normalized, atol=1e-6)
    np.testing.assert_allclose(labels.scores[3].numpy(), det.scores, atol=1e-6)


def test_a_killed_distillation_resumes_exactly(teacher, tmp_path, capsys):
    _, _, labels = teacher
    config = StudentConfig(num_keypoints=labels.keypoints.shape[1], input_size=64, width=8)
    straight = Distiller(labels, config, _settings(4)).run()
    Distiller(labels, config, _settings(2), tmp_path / "ckpt").run()  # stopped after step 2
    resumed = Distiller(labels, config, _settings(4), tmp_path / "ckpt")
    net = resumed.run()
    assert resumed.resumed_from == 2
    assert "resuming the distillation at step 2 of 4" in capsys.readouterr().out
    assert len(resumed.history) == 4
    for (name, a), b in zip(straight.state_dict().items(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_training_moves_the_student_towards_the_teacher(teacher):
    _, _, labels = teacher
    config = StudentConfig(num_keypoints=labels.keypoints.shape[1], input_size=64, width=8)
    distiller = Distiller(labels, config, DistillSettings(steps=40, batch_size=8, seed=1))
    before = agreement(distiller.predict(labels.images), labels.keypoints)
    distiller.run()
    after = agreement(distiller.predict(labels.images), labels.keypoints)
    assert after["mean_error_diagonal"] < before["mean_error_diagonal"]
    first = np.mean([h["loss"] for h in distiller.history[:5]])
    last = np.mean([h["loss"] for h in distiller.history[-5:]])
    assert last < first


def test_the_exported_student_gives_the_torch_keypoints(teacher):
    path, _, labels = teacher
    bundle = load_bundle(path)
    config = StudentConfig(num_keypoints=bundle.num_keypoints, input_size=64, width=8)
    distiller = Distiller(labels, config, _settings(2))
    net = distiller.run()
    save_student(path, bundle, net)
    detector = StudentDetector.from_bundle(path)
    located, _ = detector.locate(labels.images.float() / 255)
    np.testing.assert_allclose(
        located.numpy(), distiller.predict(labels.images).numpy(), atol=1e-4, rtol=0
    )
