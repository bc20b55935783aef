"""Distillation: label images with the diffusion teacher once, then train the student on them.

The teacher is run once per image (all of its test-time views), never per augmentation: each
augmented copy gets the teacher's keypoints moved by the known affine transform
(:func:`skp_core.affine.transform_points`), and keypoints moved out of the frame are left out
of the loss. The loss is a cross-entropy between the student's heatmap softmax and a Gaussian
at the teacher's keypoint (fast to learn), plus the distance of the soft-argmax to it (what is
measured), plus the score's distance to the teacher's. Every draw comes from one seeded
generator whose state is checkpointed with the weights and Adam's moments, so a killed run
continues exactly where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from skp_core.affine import identity_affine, sample_affine, transform_points, warp
from skp_core.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from skp_core.image_batch import stack_resized
from skp_core.progress import progress
from skp_core.student_network import StudentConfig, StudentNet, expected_location, read_scores

__all__ = ["DistillSettings", "Distiller", "TeacherLabels", "agreement", "label_images"]

PCK_THRESHOLD = 0.05
"""PCK@0.05: a keypoint agrees when within 5 % of the image diagonal of the teacher's."""


@dataclass
class TeacherLabels:
    """What the teacher said about each image, with the image at the student's input size."""

    images: Tensor  # uint8 [N, 3, S, S]
    keypoints: Tensor  # float32 [N, K, 2], normalized (x, y)
    scores: Tensor  # float32 [N, K]


def label_images(
    detector: Any, images: Sequence[np.ndarray], input_size: int, batch_size: int = 4
) -> TeacherLabels:
    """Run the teacher once per image (uint8 HxWx3 arrays) and keep its keypoints."""
    kept, keypoints, scores = [], [], []
    bar = progress(total=len(images), desc="labelling with the teacher", unit="image")
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        for image, det in zip(chunk, detector.detect(chunk), strict=True):
            keypoints.append(torch.from_numpy(det.normalized).float())
            scores.append(torch.from_numpy(det.scores).float())
            tensor = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1)
            resized = stack_resized([tensor.float() / 255], input_size, torch.device("cpu"))
            kept.append((resized[0] * 255).round().clamp(0, 255).to(torch.uint8))
        bar.update(len(chunk))
    bar.close()
    return TeacherLabels(torch.stack(kept), torch.stack(keypoints), torch.stack(scores))


def agreement(student: Tensor, teacher: Tensor) -> dict[str, float]:
    """Mean distance (fraction of the diagonal of the square input) and PCK@0.05 [..., K, 2]."""
    error = (student.double() - teacher.double()).norm(dim=-1) / math.sqrt(2.0)
    return {
        "mean_error_diagonal": float(error.mean()),
        "pck@0.05": float((error <= PCK_THRESHOLD).double().mean()),
    }


def _gaussian_targets(points: Tensor, size: int, sigma: float) -> Tensor:
    """Normalized Gaussians [B, K, size, size] centred on normalized points [B, K, 2]."""
    centres = (torch.arange(size, dtype=points.dtype) + 0.5) / size
    dx = (centres.view(1, 1, 1, size) - points[..., 0, None, None]) * size
    dy = (centres.view(1, 1, size, 1) - points[..., 1, None, None]) * size
    g = torch.exp(-(dx**2 + dy**2) / (2 * sigma**2))
    return g / g.flatten(-2).sum(-1).clamp_min(1e-12)[..., None, None]


@dataclass
class DistillSettings:
    """Training settings; the augmentation is drawn per image and step."""

    steps: int = 300
    batch_size: int = 16
    learning_rate: float = 2e-3
    seed: int = 0
    rotation_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.0)
    translation: float = 0.05
    augment_probability: float = 0.5
    sigma: float = 1.0  # of the heatmap target, in heatmap cells
    checkpoint_every: int = 50


class Distiller:
    """Trains a :class:`StudentNet` on :class:`TeacherLabels`, resumable from a checkpoint."""

    def __init__(
        self,
        labels: TeacherLabels,
        config: StudentConfig,
        settings: DistillSettings,
        checkpoint_dir: str | Path | None = None,
    ) -> None:
        self.labels, self.config, self.settings = labels, config, settings
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.mean = torch.tensor(config.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(config.std).view(1, 3, 1, 1)
        torch.manual_seed(settings.seed)  # the initial weights
        self.net = StudentNet(config)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=settings.learning_rate)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.resumed_from: int | None = None

    def _batch(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        s = self.settings
        n = self.labels.images.shape[0]
        index = torch.randint(n, (s.batch_size,), generator=self.generator)
        images = self.labels.images[index].float() / 255
        points, scores = self.labels.keypoints[index], self.labels.scores[index]
        theta = sample_affine(
            s.batch_size,
            self.generator,
            rotation_deg=s.rotation_deg,
            scale_range=s.scale_range,
            translation=s.translation,
        )
        keep = torch.rand(s.batch_size, generator=self.generator) >= s.augment_probability
        theta = torch.where(keep[:, None, None], identity_affine(s.batch_size), theta)
        images = warp(images, theta)
        points = transform_points(points, theta)
        visible = ((points >= 0) & (points <= 1)).all(dim=-1).float()
        return (images - self.mean) / self.std, points, scores, visible

    def loss(self) -> tuple[Tensor, dict[str, float]]:
        images, points, scores, visible = self._batch()
        heat, score_logits = self.net(images)
        log_probs = torch.log_softmax(heat.flatten(-2), dim=-1)
        target = _gaussian_targets(points, heat.shape[-1], self.settings.sigma).flatten(-2)
        weight = visible / visible.sum().clamp_min(1.0)
        heat_loss = (-(target * log_probs).sum(-1) * weight).sum()
        probs = log_probs.exp().unflatten(-1, heat.shape[-2:])
        distance = ((expected_location(probs) - points).norm(dim=-1) * weight).sum()
        predicted = read_scores(probs, score_logits)
        score_loss = (F.l1_loss(predicted, scores, reduction="none") * weight).sum()
        total = heat_loss + 10.0 * distance + score_loss
        terms = {
            "loss": float(total.detach()),
            "heatmap": float(heat_loss.detach()),
            "distance": float(distance.detach()),
            "score": float(score_loss.detach()),
        }
        return total, terms

    def _save(self) -> None:
        if self.checkpoint_dir is None:
            return
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        state = self.optimizer.state_dict()
        for i, moments in state["state"].items():
            for name, value in moments.items():
                tensors[f"adam.{i}.{name}"] = torch.as_tensor(value)
        tensors["generator"] = self.generator.get_state()
        meta = {"step": self.step, "history": self.history, "student": self.config.to_dict()}
        save_checkpoint(self.checkpoint_dir, tensors, meta)

    def _load(self) -> None:
        assert self.checkpoint_dir is not None
        tensors, meta = load_checkpoint(self.checkpoint_dir)
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        state = self.optimizer.state_dict()
        for i in range(len(state["param_groups"][0]["params"])):
            names = ("step", "exp_avg", "exp_avg_sq")
            if f"adam.{i}.step" in tensors:
                state["state"][i] = {n: tensors[f"adam.{i}.{n}"].clone() for n in names}
        self.optimizer.load_state_dict(state)
        self.generator.set_state(tensors["generator"])
        self.step, self.history = int(meta["step"]), list(meta["history"])
        self.resumed_from = self.step

    def run(self) -> StudentNet:
        """Train up to ``settings.steps``; resumes from the checkpoint directory if it has one."""
        if self.checkpoint_dir is not None and has_checkpoint(self.checkpoint_dir):
            self._load()
            print(
                f"resuming the distillation at step {self.step} of {self.settings.steps} "
                f"from {self.checkpoint_dir}",
                flush=True,
            )
        self.net.train()
        bar = progress(total=self.settings.steps, initial=self.step, desc="distilling", unit="step")
        while self.step < self.settings.steps:
            total, terms = self.loss()
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            self.step += 1
            self.history.append(terms)
            bar.set_postfix(loss=f"{terms['loss']:.4f}")
            bar.update(1)
            every = self.settings.checkpoint_every
            if self.step % every == 0 or self.step == self.settings.steps:
                self._save()
        bar.close()
        return self.net.eval()

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """Student locations [N, K, 2] of uint8 images [N, 3, S, S]."""
        self.net.eval()
        x = (images.float() / 255 - self.mean) / self.std
        return torch.cat([self.net.keypoints(c)[0] for c in x.split(32)])
