"""What one captured layer's upsampled-attention maps are computed from, and how (METHOD §2).

Bicubic upsampling is linear and separable: ``up(X) = U_y X U_x^T`` with U_y [R, h] and U_x
[R, w] taken from torch's own bicubic kernel. It acts on space while ``to_q`` and ``q k^T``
act on channels, so a head's R x R logits are the upsampling of its native logits as well as
the product of upsampled queries with k. Which of the two is cheaper, and whether the flash
attention kernel can do the whole softmax, depends on the layer's shapes: see
:func:`choose_strategy`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "STRATEGIES",
    "LayerPlan",
    "LayerQK",
    "MapSettings",
    "bicubic_matrix",
    "choose_strategy",
]

STRATEGIES = ("auto", "logits", "query", "flash")

#: Pixels per tile on the CPU: [1024, 500] float32 tiles (2 MB) stay within the cache.
CPU_BLOCK_PIXELS = 1024
#: Pixels per tile of the CPU backward: its band updates overlap less with taller tiles
#: (measured at SD 1.5 shapes: 0.26 s per layer and image at 1024, 0.19 s at 4096, 0.26 at 8192).
CPU_BACKWARD_BLOCK_PIXELS = 4096
#: Pixels per tile on CUDA, where larger kernels and all heads at once are cheaper.
CUDA_BLOCK_PIXELS = 16384
#: The flash kernel's cost grows with the (padded) head width; above this the tiles are faster
#: for a forward of kept tokens on a CPU (measured at 500 tokens, 128 x 128, per layer and
#: image: 10 tokens (width 16) flash 65-67 ms, tiles 65-77 ms; 25 tokens (width 32) flash
#: 86-101 ms, tiles 73-82 ms). CUDA keeps the fused kernel up to twice that width.
CPU_FLASH_MAX_WIDTH = 16
CUDA_FLASH_MAX_WIDTH = 32
#: Where "auto" chose a flash forward on a CPU, the backward takes tiles: with the forward's
#: stored log-sum-exp they are faster there (measured per layer and image, 10 kept tokens of
#: 500: tiles 73-95 ms, flash 135-138 ms). CUDA and an explicit "flash" keep its backward.


@dataclass
class LayerQK:
    """One captured attn2 layer: native-grid queries and keys (scaled by 1/sqrt(head dim)).

    ``q`` is [B, h*w, inner]; ``k`` is [1, T, inner] when every image shares the context, else
    [B, T, inner]. ``weight`` multiplies this layer's head-summed softmax (1 / (heads x layers)
    for the head and layer mean).
    """

    q: Tensor
    k: Tensor
    heads: int
    grid: tuple[int, int]
    weight: float
    lse: Tensor | None = None
    """Optional store [B, H, R*R] of each pixel's log-sum-exp over tokens, filled where it
    comes free (the CPU flash kernel returns it) so that a later backward of kept tokens can
    skip recomputing it; ``lse_known`` [B] says which images are filled. Tiles never fill it:
    on a [1024, 500] tile it would cost two passes (softmax 287 us -> 530 us) to save one in
    the backward (softmax -> subtract + exp, 287 -> 163 us)."""
    lse_known: Tensor | None = None


@dataclass(frozen=True)
class MapSettings:
    """How the maps are computed; none of it changes a value beyond float rounding."""

    resolution: int
    strategy: str = "auto"
    block_pixels: int | None = None
    dtype: torch.dtype | None = None
    """Dtype of logits and softmax; None = float32 (float64 inputs stay float64)."""


@functools.lru_cache(maxsize=64)
def bicubic_matrix(n: int, size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[size, n]: the weights of torch's bicubic upsampling (align_corners=False) of n -> size.

    Taken from ``F.interpolate`` itself (on the identity, in float64), so border clamping and
    the cubic coefficient are exactly torch's; the 2-D kernel is the product of two of these.
    Cached: every forward of a layer needs the same few (callers must not modify them).
    """
    eye = torch.eye(n, dtype=torch.float64).view(1, n, n, 1)
    weights = F.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=False)
    return weights[0, :, :, 0].T.contiguous().to(device=device, dtype=dtype)


def flash_width(head_dim: int, kept: int) -> int:
    """Padded width of q, k and v for the flash path: v holds one column per kept token."""
    return 8 * math.ceil(max(head_dim, kept) / 8)


def choose_strategy(
    layer: LayerQK,
    resolution: int,
    block_rows: int,
    kept: int | None,
    flash_max_width: int = CPU_FLASH_MAX_WIDTH,
) -> str:
    """The cheapest exact way to compute this layer's maps of ``kept`` tokens (None = all).

    flash: one fused attention kernel per head computes the kept tokens' probabilities (v is
    one-hot), multi-threaded and without materializing logits; its cost grows with the width.
    Otherwise tiles: ``logits`` costs a row window (about ``block_rows / scale + 3`` rows) per
    logit plus the column pass on the native rows; ``query`` a head_dim-long dot product per
    logit plus the per-channel upsampling shared by all tokens.
    """
    h, w = layer.grid
    tokens = layer.k.shape[1]
    head_dim = layer.q.shape[-1] // layer.heads
    if kept is not None and flash_width(head_dim, kept) <= flash_max_width:
        return "flash"
    window = min(h, math.ceil(block_rows * h / resolution) + 4)
    per_logit_logits = window + h * w / resolution
    per_logit_query = head_dim + 16.0 * layer.q.shape[-1] / (layer.heads * tokens)
    return "logits" if per_logit_logits <= per_logit_query else "query"


@functools.lru_cache(maxsize=64)
def _row_windows(uy: Tensor, rows: int) -> list[tuple[int, int, int, int, Tensor]]:
    """(r0, r1, i0, i1, U_y[r0:r1, i0:i1]): tiles of output rows and the native rows they read.

    Cached per (cached) matrix and tile height.
    """
    out = []
    size = uy.shape[0]
    for r0 in range(0, size, rows):
        r1 = min(r0 + rows, size)
        used = (uy[r0:r1] != 0).any(0).nonzero().flatten()
        i0, i1 = int(used[0]), int(used[-1]) + 1
        out.append((r0, r1, i0, i1, uy[r0:r1, i0:i1].contiguous()))
    return out


class LayerPlan:
    """One layer's shapes, interpolation matrices, tile windows and chosen strategy."""

    def __init__(self, layer: LayerQK, settings: MapSettings, kept: int | None) -> None:
        self.q, self.k = layer.q, layer.k
        self.lse, self.lse_known = layer.lse, layer.lse_known
        self.heads = layer.heads
        self.weight = layer.weight
        self.grid = (int(layer.grid[0]), int(layer.grid[1]))
        h, w = self.grid
        if h * w != layer.q.shape[1]:
            raise ValueError(f"grid {layer.grid} does not match {layer.q.shape[1]} queries")
        if layer.q.shape[-1] % layer.heads or layer.k.shape[-1] != layer.q.shape[-1]:
            raise ValueError(
                f"q and k must have the same width, a multiple of the {layer.heads} heads; "
                f"got {layer.q.shape[-1]} and {layer.k.shape[-1]}"
            )
        self.batch = int(layer.q.shape[0])
        self.tokens = int(layer.k.shape[1])
        self.head_dim = layer.q.shape[-1] // layer.heads
        self.resolution = r = int(settings.resolution)
        self.device = layer.q.device
        if settings.dtype is not None:
            self.dtype = settings.dtype
        else:
            self.dtype = torch.float64 if layer.q.dtype == torch.float64 else torch.float32
        default = CUDA_BLOCK_PIXELS if self.device.type == "cuda" else CPU_BLOCK_PIXELS
        self.block_rows = max(1, min(r, (settings.block_pixels or default) // r))
        strategy = settings.strategy
        cpu = self.device.type != "cuda"
        if strategy == "auto":
            widest = CPU_FLASH_MAX_WIDTH if cpu else CUDA_FLASH_MAX_WIDTH
            strategy = choose_strategy(layer, r, self.block_rows, kept, widest)
        if strategy not in STRATEGIES[1:]:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
        if strategy == "flash" and kept is None:
            strategy = "logits"  # flash computes kept tokens only; all tokens take the tiles
        self.strategy = strategy
        #: The backward's way: the forward's, except that "auto" on a CPU takes tiles.
        self.backward_strategy = strategy
        if strategy == "flash" and settings.strategy == "auto" and cpu:
            self.backward_strategy = choose_strategy(layer, r, self.block_rows, kept, 0)
        self.uy = bicubic_matrix(h, r, self.dtype, self.device)
        self.ux = bicubic_matrix(w, r, self.dtype, self.device)
        self.windows = _row_windows(self.uy, self.block_rows)
        if settings.block_pixels is None and self.device.type == "cpu":
            self.backward_rows = max(self.block_rows, min(r, CPU_BACKWARD_BLOCK_PIXELS // r))
        else:
            self.backward_rows = self.block_rows
        self.backward_windows = _row_windows(self.uy, self.backward_rows)

    def has_lse(self, b0: int, b1: int) -> bool:
        """Whether the log-sum-exp of images [b0, b1) is stored."""
        return self.lse_known is not None and bool(self.lse_known[b0:b1].all())

    def head_qk(self, b: int) -> tuple[Tensor, Tensor]:
        """Image b's per-head queries [H, h*w, d] and keys [H, T, d] in the compute dtype."""
        q = self.q[b].detach().to(self.dtype)
        k = self.k[b if self.k.shape[0] > 1 else 0].detach().to(self.dtype)
        q = q.view(q.shape[0], self.heads, self.head_dim).transpose(0, 1)
        k = k.view(k.shape[0], self.heads, self.head_dim).transpose(0, 1)
        return q, k

    def merge_heads(self, x: Tensor) -> Tensor:
        """[H, n, d] -> [n, H*d], the layout of q and k."""
        return x.transpose(0, 1).reshape(x.shape[1], -1)

    def upsampled_queries(self, b: int) -> Tensor:
        """Image b's queries upsampled to R x R, [R*R, inner] (pixel-major)."""
        h, w = self.grid
        grid = self.q[b].detach().to(self.dtype).T.reshape(-1, h, w)  # [inner, h, w]
        up = torch.matmul(torch.matmul(self.uy, grid), self.ux.T)  # [inner, R, R]
        return up.permute(1, 2, 0).reshape(self.resolution**2, -1)

    def queries_adjoint(self, d_up: Tensor) -> Tensor:
        """Gradient of native queries [h*w, inner] from that of upsampled ones [R*R, inner]."""
        h, w = self.grid
        r = self.resolution
        grid = d_up.T.reshape(-1, r, r)  # [inner, R, R]
        d_grid = torch.matmul(torch.matmul(self.uy.T, grid), self.ux)  # [inner, h, w]
        return d_grid.reshape(d_grid.shape[0], h * w).T
