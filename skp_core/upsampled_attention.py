"""Exact, fused attention maps at the map resolution from native-grid queries (METHOD.md §2).

A map is ``mean over layers and heads of softmax_tokens(up(q) k^T)``, with ``up`` the bicubic
upsampling of a layer's 8x8..32x32 grid to R x R (128 x 128). Written out
(``skp_core.upsampled_attention_reference``, the test oracle) it materializes
[heads, R*R, tokens] per layer and image (262 MB at SD 1.5 shapes) several times over, and that
memory traffic, not the arithmetic, is most of its cost. Here the same numbers are computed
without any full-size intermediate, per layer by whichever exact way is cheapest for its
shapes (``skp_core.upsampled_attention_plan.choose_strategy``):

- every token's maps (for the candidate ranking): tiles of output rows, one head at a time
  (``skp_core.attention_tiles``), summed in place over heads and layers;
- a set S of kept tokens: ``p_m = exp(l_m - logsumexp(l))`` for m in S, every other token
  entering only through each pixel's log-sum-exp, by the fused attention kernel with a
  one-hot v (``skp_core.attention_flash``) or by tiles.

Backward saves nothing of size [heads, pixels, tokens]: each tile or block is recomputed and,
per head and pixel, the softmax gradient restricted to S, ``p_n (g_n [n in S] - sum_{m in S}
g_m p_m)``, is pushed back through the same linear maps to every layer's q and k.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from skp_core.attention_flash import FlashEngine
from skp_core.attention_tiles import TileEngine
from skp_core.upsampled_attention_plan import STRATEGIES, LayerPlan, LayerQK, MapSettings

__all__ = ["STRATEGIES", "LayerQK", "MapSettings", "fused_maps", "layer_strategies"]


Engine = TileEngine | FlashEngine


def _engines(
    layers: Sequence[LayerQK], settings: MapSettings, kept: int | None
) -> list[tuple[Engine, Engine]]:
    """Per layer, the forward's engine and the backward's (the same unless they differ)."""
    engines: list[tuple[Engine, Engine]] = []
    for layer in layers:
        plan = LayerPlan(layer, settings, kept)
        forward: Engine
        if plan.strategy == "flash":
            assert kept is not None
            forward = FlashEngine(plan, kept)
        else:
            forward = TileEngine(plan)
        backward = forward
        if plan.backward_strategy != plan.strategy:
            backward = TileEngine(plan, plan.backward_strategy)
        engines.append((forward, backward))
    return engines


def layer_strategies(
    layers: Sequence[LayerQK], settings: MapSettings, kept: int | None = None
) -> list[str]:
    """The strategy each layer would use for maps of ``kept`` tokens (None = all)."""
    return [LayerPlan(layer, settings, kept).strategy for layer in layers]


class _FusedMaps(torch.autograd.Function):
    """Forward through the engines (pixel-major), backward by recomputation."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        engines: list[tuple[Engine, Engine]],
        tokens: Tensor | None,
        precomputed: Tensor | None,
        *qk: Tensor,
    ) -> Tensor:
        ctx.engines = engines  # type: ignore[attr-defined]
        ctx.tokens = tokens  # type: ignore[attr-defined]
        ctx.save_for_backward(*qk)
        if precomputed is not None:
            return precomputed.clone()
        first = engines[0][0].plan
        kept = first.tokens if tokens is None else tokens.shape[-1]
        out_dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
        pixel_major = torch.zeros(
            first.batch, first.resolution**2, kept, dtype=out_dtype, device=first.device
        )
        for engine, _ in engines:
            engine.add_maps(pixel_major, tokens)  # type: ignore[arg-type]
        return pixel_major.transpose(1, 2).contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, ...]:
        engines = ctx.engines  # type: ignore[attr-defined]
        tokens = ctx.tokens  # type: ignore[attr-defined]
        pixel_major = grad.transpose(1, 2)
        out: list[Tensor | None] = [None, None, None]
        for _, engine in engines:
            dq, dk = engine.grads(pixel_major, tokens)
            out.append(dq.to(engine.plan.q.dtype))
            out.append(dk.to(engine.plan.k.dtype))
        return tuple(out)


def fused_maps(
    layers: Sequence[LayerQK],
    settings: MapSettings,
    tokens: Tensor | None = None,
    precomputed: Tensor | None = None,
) -> Tensor:
    """Weighted head/layer sum of token softmaxes at R x R: [B, T, R*R], or [B, K, R*R].

    ``tokens`` ([K] for every image or [B, K] per image) keeps only those tokens' maps; their
    values are exactly those of the full maps. ``precomputed`` are those same values already
    computed without gradient (e.g. gathered from full maps made for ranking): the forward then
    returns them and only the backward is paid. Differentiable in every layer's q and k.
    """
    if not layers:
        raise ValueError("no captured layers")
    batch, count = int(layers[0].q.shape[0]), int(layers[0].k.shape[1])
    for layer in layers:
        if layer.q.shape[0] != batch or layer.k.shape[1] != count:
            raise ValueError("captured layers disagree on batch size or token count")
    if tokens is not None:
        tokens = tokens.to(device=layers[0].q.device, dtype=torch.long)
        if tokens.ndim not in (1, 2) or (tokens.ndim == 2 and tokens.shape[0] != batch):
            raise ValueError(f"tokens must be [K] or [B={batch}, K], got {tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= count):
            raise ValueError(f"token indices must lie in [0, {count})")
    kept = None if tokens is None else int(tokens.shape[-1])
    if precomputed is not None:
        r = settings.resolution
        shape = (batch, count if kept is None else kept, r * r)
        if tuple(precomputed.shape) != shape:
            raise ValueError(
                f"precomputed maps must be {list(shape)}, got {list(precomputed.shape)}"
            )
        precomputed = precomputed.detach()
    engines = _engines(layers, settings, kept)
    flat: list[Tensor] = []
    for layer in layers:
        flat += [layer.q, layer.k]
    return _FusedMaps.apply(engines, tokens, precomputed, *flat)
