"""The distilled student: a small fully-convolutional network, K heatmaps and a soft-argmax.

The diffusion detector costs a VAE encode and most of a UNet per view, ten views per frame.
The student replaces all of it by a few convolutions at a quarter of a 256-pixel input, so a
robot's CPU can run it at camera rate. It is trained from scratch on the teacher's own
keypoints (no labels), so its only job is to reproduce the teacher's read-out:

- ``heatmaps``: K location logits on a grid of stride 4; their spatial softmax is the
  student's map, and its expectation (the soft-argmax) the keypoint, differentiable and
  sub-pixel without any post-processing;
- ``scores``: a second map per keypoint, read under the softmax and squashed to (0, 1), which
  learns the teacher's peak attention probability (the node thresholds on it).

Coordinates follow the method's convention: (x, y) in [0, 1] with pixel centres at
``(j + 0.5) / W``. The network takes images already normalized by :class:`StudentConfig`'s
mean and std; the ONNX file does not normalize, the JSON beside it says how.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "StudentConfig",
    "StudentNet",
    "expected_location",
    "read_scores",
    "soft_argmax",
    "student_problem",
]

HEATMAP_STRIDE = 4
"""Input pixels per heatmap cell: 64 x 64 maps for a 256-pixel input."""


@dataclass(frozen=True)
class StudentConfig:
    """Shape of a student: what the ONNX file expects and what the JSON beside it records."""

    num_keypoints: int
    input_size: int = 256
    width: int = 32
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)

    @property
    def heatmap_size(self) -> int:
        return self.input_size // HEATMAP_STRIDE

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        """Build from JSON; a malformed entry raises ValueError naming it."""
        problem = student_problem(data)
        if problem is not None:
            raise ValueError(problem)
        return cls(
            num_keypoints=int(data["num_keypoints"]),
            input_size=int(data["input_size"]),
            width=int(data["width"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
        )


def _int_in(data: dict[str, Any], key: str, low: int, high: int) -> str | None:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        return f"{key} must be an integer in [{low}, {high}], got {value!r}"
    return None


def student_problem(data: Any) -> str | None:
    """What is wrong with a student description (JSON), or None when it is usable."""
    if not isinstance(data, dict):
        return f"the student description must be a JSON object, got {type(data).__name__}"
    for key, low, high in (("num_keypoints", 1, 1024), ("input_size", 16, 4096), ("width", 4, 512)):
        problem = _int_in(data, key, low, high)
        if problem is not None:
            return problem
    if data["input_size"] % (2 * HEATMAP_STRIDE * 2):
        return f"input_size must be a multiple of 16, got {data['input_size']}"
    for key in ("mean", "std"):
        values = data.get(key)
        if (
            not isinstance(values, list)
            or len(values) != 3
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            or (key == "std" and not all(v > 0 for v in values))
        ):
            return f"{key} must be three numbers (std > 0), got {values!r}"
    return None


def expected_location(probs: Tensor) -> Tensor:
    """Expected (x, y) [..., 2] under spatial probabilities [..., H, W] (pixel centres)."""
    height, width = probs.shape[-2:]
    xs = (torch.arange(width, dtype=probs.dtype, device=probs.device) + 0.5) / width
    ys = (torch.arange(height, dtype=probs.dtype, device=probs.device) + 0.5) / height
    x = (probs.sum(dim=-2) * xs).sum(dim=-1)
    y = (probs.sum(dim=-1) * ys).sum(dim=-1)
    return torch.stack((x, y), dim=-1)


def soft_argmax(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Expected (x, y) [..., 2] under the spatial softmax of ``logits`` [..., H, W], and it."""
    probs = torch.softmax(logits.flatten(-2), dim=-1).unflatten(-1, logits.shape[-2:])
    return expected_location(probs), probs


def read_scores(probs: Tensor, score_logits: Tensor) -> Tensor:
    """Scores [...] in (0, 1): the score logits averaged under the location's softmax."""
    return torch.sigmoid((probs * score_logits).flatten(-2).sum(dim=-1))


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    """Two 3x3 convolutions with a skip: depth without losing the location signal."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


class StudentNet(nn.Module):
    """Input [B, 3, S, S] (normalized) -> heatmap logits and score logits [B, K, S/4, S/4].

    An encoder to stride 16 for context (where on the object), then back up to stride 4 with
    a skip from the stride-4 features for precision (where in the image).
    """

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.stem = nn.Sequential(_conv(3, w // 2, 2), _conv(w // 2, w, 2), _Residual(w))
        self.down = nn.Sequential(
            _conv(w, 2 * w, 2), _Residual(2 * w), _conv(2 * w, 4 * w, 2), _Residual(4 * w)
        )
        self.up = _conv(4 * w + w, w)
        self.head = nn.Conv2d(w, 2 * config.num_keypoints, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        fine = self.stem(x)
        coarse = self.down(fine)
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="nearest")
        out = self.head(self.up(torch.cat((fine, coarse), dim=1)))
        k = self.config.num_keypoints
        return out[:, :k], out[:, k:]

    def keypoints(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(locations [B, K, 2] in [0, 1], scores [B, K] in (0, 1), maps [B, K, h, w])."""
        heat, score_logits = self(x)
        locations, probs = soft_argmax(heat)
        return locations, read_scores(probs, score_logits), probs


class StudentExport(nn.Module):
    """What the ONNX file computes: the read-out is part of the graph, not the caller's job."""

    def __init__(self, net: StudentNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.net.keypoints(image)
