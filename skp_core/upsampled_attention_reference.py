"""The straightforward computation of the upsampled-query maps (METHOD.md §2): the test oracle.

Each layer's native-grid queries are bicubically upsampled with ``F.interpolate`` to R x R,
then every head's full [R*R, T] softmax over tokens is formed and summed. It is what the first
release computed, function by function like the authors' code; the fused computation in
``skp_core.upsampled_attention`` must equal it. Select it with ``map_method="reference"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from skp_core.upsampled_attention_plan import LayerQK

__all__ = ["reference_maps"]


class _WeightedHeadSumSoftmax(torch.autograd.Function):
    """``weight * sum_h softmax(k_h q_h^T, dim=tokens)`` that stores only q and k for backward.

    Plain autograd would keep every head's [B, T, R*R] softmax output alive until backward;
    recomputing one head at a time in backward keeps one head map live at once.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        q: Tensor,
        k: Tensor,
        heads: int,
        weight: float,
    ) -> Tensor:
        head_dim = q.shape[-1] // heads
        total: Tensor | None = None
        for i in range(heads):
            sl = slice(i * head_dim, (i + 1) * head_dim)
            probs = torch.bmm(k[:, :, sl], q[:, :, sl].transpose(1, 2)).softmax(dim=1)
            total = probs if total is None else total.add_(probs)
        assert total is not None
        ctx.save_for_backward(q, k)
        ctx.heads = heads  # type: ignore[attr-defined]
        ctx.weight = weight  # type: ignore[attr-defined]
        return total.mul_(weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None, None]:
        q, k = ctx.saved_tensors  # type: ignore[attr-defined]
        heads, weight = ctx.heads, ctx.weight  # type: ignore[attr-defined]
        need_q, need_k = ctx.needs_input_grad[:2]
        grad_q = torch.empty_like(q) if need_q else None
        grad_k = torch.empty_like(k) if need_k else None
        head_dim = q.shape[-1] // heads
        for i in range(heads):
            sl = slice(i * head_dim, (i + 1) * head_dim)
            probs = torch.bmm(k[:, :, sl], q[:, :, sl].transpose(1, 2)).softmax(dim=1)
            # softmax backward over tokens, p * (g - sum_t p g), as aten's one fused kernel
            dlogits = torch.ops.aten._softmax_backward_data(grad, probs, 1, probs.dtype)
            if grad_q is not None:
                grad_q[:, :, sl] = torch.bmm(dlogits.transpose(1, 2), k[:, :, sl]).mul_(weight)
            if grad_k is not None:
                grad_k[:, :, sl] = torch.bmm(dlogits, q[:, :, sl]).mul_(weight)
        return grad_q, grad_k, None, None


def upsampled_queries(layer: LayerQK, resolution: int) -> Tensor:
    """Native queries [B, h*w, inner] -> bicubically upsampled [B, R*R, inner] (float32+)."""
    b = layer.q.shape[0]
    h, w = layer.grid
    dtype = torch.float64 if layer.q.dtype == torch.float64 else torch.float32
    q = layer.q.to(dtype).transpose(1, 2).reshape(b, -1, h, w)
    q = F.interpolate(q, size=(resolution, resolution), mode="bicubic", align_corners=False)
    return q.flatten(2).transpose(1, 2)


def reference_maps(
    layers: Sequence[LayerQK], resolution: int, tokens: Tensor | None = None
) -> Tensor:
    """Weighted head/layer sum of token softmaxes [B, T, R*R] (or [B, K, R*R] for ``tokens``)."""
    total: Tensor | None = None
    for layer in layers:
        q = upsampled_queries(layer, resolution)
        k = layer.k.to(q.dtype).expand(q.shape[0], -1, -1)
        maps = _WeightedHeadSumSoftmax.apply(q, k, layer.heads, layer.weight)
        total = maps if total is None else total + maps
    assert total is not None
    if tokens is None:
        return total
    index = tokens.to(device=total.device, dtype=torch.long)
    index = index.expand(total.shape[0], -1) if index.ndim == 1 else index
    return total.gather(1, index[:, :, None].expand(-1, -1, total.shape[-1]))
