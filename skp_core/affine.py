"""Random invertible affine transforms and the warp used for equivariance (METHOD §3 "Affine T").

A transform ``theta`` is a batch of 2x3 matrices in the ``affine_grid`` convention
(normalized coordinates in [-1, 1], ``align_corners=False``): the warped image satisfies
``out(p) = in(theta @ [p, 1])``, so a scale ``s < 1`` zooms in. The same sampler is used for
the forward warp and for the inverse warp (with the inverted matrix), as upstream does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "identity_affine",
    "invert_affine",
    "sample_affine",
    "transform_points",
    "warp",
]


def sample_affine(
    n: int,
    generator: torch.Generator,
    *,
    rotation_deg: float = 15.0,
    scale_range: tuple[float, float] = (0.8, 1.0),
    translation: float = 0.25,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw ``n`` random rotation/scale/translation transforms, shape [n, 2, 3].

    The uniforms are drawn on the generator's own device (one ``rand(n, 4)`` call: angle,
    scale, tx, ty) and only then moved, so a CPU generator with a given seed yields the same
    transforms whatever the target device is.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    u = torch.rand((n, 4), generator=generator, device=generator.device, dtype=torch.float32)
    u = u.to(torch.float64)
    angle = (2.0 * u[:, 0] - 1.0) * math.radians(rotation_deg)
    low, high = scale_range
    scale = low + (high - low) * u[:, 1]
    tx = (2.0 * u[:, 2] - 1.0) * translation
    ty = (2.0 * u[:, 3] - 1.0) * translation
    cos = scale * torch.cos(angle)
    sin = scale * torch.sin(angle)
    theta = torch.stack(
        (
            torch.stack((cos, sin, tx), dim=-1),
            torch.stack((-sin, cos, ty), dim=-1),
        ),
        dim=-2,
    )
    target = generator.device if device is None else device
    return theta.to(device=target, dtype=dtype)


def identity_affine(
    n: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Identity transforms [n, 2, 3] (warping with them returns the input unchanged)."""
    eye = torch.eye(2, 3, device=device, dtype=dtype)
    return eye.unsqueeze(0).repeat(n, 1, 1)


def invert_affine(theta: Tensor) -> Tensor:
    """Invert affine transforms [..., 2, 3] as 3x3 homogeneous matrices.

    Closed form (adjugate / determinant) rather than ``linalg.inv`` so it runs on any dtype
    (half included) and device, batched over the leading axes.
    """
    a, b, tx = theta[..., 0, 0], theta[..., 0, 1], theta[..., 0, 2]
    c, d, ty = theta[..., 1, 0], theta[..., 1, 1], theta[..., 1, 2]
    det = a * d - b * c
    ia, ib = d / det, -b / det
    ic, id_ = -c / det, a / det
    itx = -(ia * tx + ib * ty)
    ity = -(ic * tx + id_ * ty)
    return torch.stack(
        (
            torch.stack((ia, ib, itx), dim=-1),
            torch.stack((ic, id_, ity), dim=-1),
        ),
        dim=-2,
    )


def _batched_theta(theta: Tensor, n: int, like: Tensor) -> Tensor:
    """Broadcast a single [2, 3] transform to [n, 2, 3] and check batch sizes."""
    if theta.shape[-2:] != (2, 3):
        raise ValueError(f"theta must have shape [n, 2, 3] or [2, 3], got {tuple(theta.shape)}")
    if theta.dim() == 2:
        theta = theta.unsqueeze(0).expand(n, 2, 3)
    elif theta.dim() != 3 or theta.shape[0] != n:
        raise ValueError(f"theta batch {tuple(theta.shape)} does not match batch size {n}")
    return theta.to(device=like.device, dtype=like.dtype)


def warp(x: Tensor, theta: Tensor, mode: str = "bilinear") -> Tensor:
    """Warp images or maps ``x`` [n, C, H, W] so that ``out(p) = x(theta p)``.

    One transform per batch entry, shared by all channels (so a whole stack of token maps
    moves together). Out-of-view samples are zero, as upstream (no masking).
    """
    if x.dim() != 4:
        raise ValueError(f"x must have shape [n, C, H, W], got {tuple(x.shape)}")
    theta = _batched_theta(theta, x.shape[0], x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def transform_points(points_xy: Tensor, theta: Tensor) -> Tensor:
    """Where normalized input points [n, K, 2] land in the image warped by ``theta``.

    ``warp`` pulls ``out(p) = in(theta p)``, so an input point ``u`` shows up at
    ``theta^-1 u`` (computed in [-1, 1] coordinates, which match the [0, 1] pixel-centre
    convention exactly for ``align_corners=False``).
    """
    if points_xy.dim() != 3 or points_xy.shape[-1] != 2:
        raise ValueError(f"points_xy must have shape [n, K, 2], got {tuple(points_xy.shape)}")
    theta = _batched_theta(theta, points_xy.shape[0], points_xy)
    inverse = invert_affine(theta)
    u = points_xy * 2.0 - 1.0
    moved = torch.einsum("nij,nkj->nki", inverse[..., :2], u) + inverse[:, None, :, 2]
    return (moved + 1.0) * 0.5
