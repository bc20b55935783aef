"""Capture the decoder cross-attention maps with an upsampled query (METHOD.md §2).

A :class:`CaptureProcessor` replaces diffusers' default processor on the captured ``attn2``
layers only (through the public ``unet.set_attn_processor`` API). It returns exactly what the
default processor returns, so the UNet's own data path is unchanged, and on the side computes
``softmax(to_q(upsample(x)) to_k(context)^T / sqrt(d))`` over tokens, averaged over heads, into a
shared :class:`CaptureState`. Once the last captured layer has run, the UNet forward is aborted:
the rest of the decoder cannot change the maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import Tensor

DEFAULT_CAPTURE_LAYERS: tuple[str, ...] = (
    "up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor",
    "up_blocks.1.attentions.1.transformer_blocks.0.attn2.processor",
    "up_blocks.1.attentions.2.transformer_blocks.0.attn2.processor",
    "up_blocks.2.attentions.0.transformer_blocks.0.attn2.processor",
)
"""The first four decoder cross-attention layers of SD 1.x (16x16 x3 and 32x32 native at 512 px),
spelled as keys of ``unet.attn_processors``."""

_SUFFIX = ".processor"


def processor_key(layer: str) -> str:
    """Normalize a layer name to its ``unet.attn_processors`` key (module name + .processor)."""
    return layer if layer.endswith(_SUFFIX) else layer + _SUFFIX


class _StopUNet(Exception):
    """Raised after the last captured layer to abandon the rest of the UNet forward."""


class CaptureState:
    """Per-forward accumulator shared by the capture processors of one UNet."""

    def __init__(self, layers: Sequence[str], resolution: int) -> None:
        if not layers:
            raise ValueError("at least one layer must be captured")
        self.layers = tuple(processor_key(name) for name in layers)
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"duplicate capture layers: {self.layers}")
        self.resolution = int(resolution)
        self.active = False
        self.early_stop = True
        self.latent_hw: tuple[int, int] = (0, 0)
        self._sum: Tensor | None = None
        self._seen: list[str] = []

    @property
    def complete(self) -> bool:
        """True once every captured layer has contributed to the current forward."""
        return len(self._seen) == len(self.layers)

    def begin(self, latent_hw: tuple[int, int], early_stop: bool) -> None:
        """Arm the processors for one UNet forward on latents of spatial size ``latent_hw``."""
        self.reset()
        self.latent_hw = (int(latent_hw[0]), int(latent_hw[1]))
        self.early_stop = early_stop
        self.active = True

    def reset(self) -> None:
        """Disarm and drop anything captured (also after a failed forward)."""
        self.active = False
        self._sum = None
        self._seen = []

    def add(self, layer: str, maps: Tensor) -> None:
        """Accumulate one layer's weighted maps [B, T, R*R]."""
        if layer in self._seen:
            raise RuntimeError(f"layer {layer} ran twice in one forward")
        self._seen.append(layer)
        self._sum = maps if self._sum is None else self._sum + maps

    def finish(self) -> Tensor:
        """Mean over the captured layers as [B, T, R, R]; disarms the state.

        Each processor already weights its maps by 1 / (heads x layers), so the sum is the mean.
        """
        try:
            if not self.complete or self._sum is None:
                missing = [name for name in self.layers if name not in self._seen]
                raise RuntimeError(
                    f"capture incomplete: layers {missing} did not run (processors removed?)"
                )
            b, t, _ = self._sum.shape
            r = self.resolution
            return self._sum.view(b, t, r, r)
        finally:
            self.reset()


def _spatial_shape(tokens: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """Recover the layer's (h, w) from its token count and the latent's aspect ratio."""
    lat_h, lat_w = latent_hw
    if lat_h <= 0 or lat_w <= 0:
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise RuntimeError("cannot infer the spatial shape of a non-square layer")
        return side, side
    h = round(math.sqrt(tokens * lat_h / lat_w))
    w = tokens // max(h, 1)
    if h * w != tokens:
        raise RuntimeError(f"{tokens} tokens do not form a grid with aspect {lat_h}x{lat_w}")
    return h, w


class _WeightedHeadSumSoftmax(torch.autograd.Function):
    """``weight * sum_h softmax(k_h q_h^T, dim=tokens)`` that stores only q and k for backward.

    Plain autograd would keep every head's [B, T, R*R] softmax output alive until backward
    (8 heads x 4 layers x 33 MB per image at SD 1.5 defaults); recomputing one head at a time
    in backward costs one extra matmul + softmax per head and keeps one head map live at once.
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


def upsampled_cross_attention(
    attn: Attention,
    hidden_states: Tensor,
    context: Tensor,
    resolution: int,
    latent_hw: tuple[int, int] = (0, 0),
    weight: float = 1.0,
) -> Tensor:
    """``weight`` x head-summed token softmax of one layer at ``resolution`` [B, T, R*R].

    With ``weight = 1 / heads`` this is the head mean; the capture folds the layer mean in too.
    METHOD: the (norm2-normalized) inputs of attn2 [B, h*w, C] are bicubically upsampled to
    R x R, then ``q = to_q(.)``. Upsampling acts on each channel over space and to_q on the
    channels at each position; both are linear (bicubic weights sum to one, so a bias commutes
    too), hence ``upsample(to_q(x)) == to_q(upsample(x))`` exactly. We project on the native
    16x16/32x32 grid and upsample q: the same numbers without the [R*R, C] x [C, C] projection at
    full resolution (for SD 1.5's 1280-channel layers that product costs more than the rest of
    the capture). Logits and softmax run in float32 whatever the backbone dtype, one head at a
    time, in forward and (recomputed) in backward.
    """
    if attn.norm_q is not None or attn.norm_k is not None or attn.group_norm is not None:
        raise NotImplementedError("capture supports SD 1.x style attention (no q/k/group norm)")
    b, n, _ = hidden_states.shape
    h, w = _spatial_shape(n, latent_hw)
    q = attn.to_q(hidden_states).float()  # [B, h*w, inner] on the native grid
    q = q.transpose(1, 2).reshape(b, -1, h, w)
    q = F.interpolate(q, size=(resolution, resolution), mode="bicubic", align_corners=False)
    q = q.flatten(2).transpose(1, 2)  # [B, R*R, inner]
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    k = attn.to_k(context).float()  # [B, T, inner]
    heads = attn.heads
    # 1/sqrt(d) goes on k, the smallest tensor, rather than on the [B, T, R*R] logits.
    k = k * (1.0 / math.sqrt(k.shape[-1] // heads))
    return _WeightedHeadSumSoftmax.apply(q, k, heads, weight)


class CaptureProcessor:
    """Default attention output plus the upsampled-query map for :class:`CaptureState`."""

    def __init__(self, layer: str, state: CaptureState) -> None:
        self.layer = processor_key(layer)
        self.state = state
        self.default = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
    ) -> Tensor:
        """Capture when armed (and stop after the last layer), then run the default processor."""
        state = self.state
        if state.active and encoder_hidden_states is not None:
            state.add(
                self.layer,
                upsampled_cross_attention(
                    attn,
                    hidden_states,
                    encoder_hidden_states,
                    state.resolution,
                    state.latent_hw,
                    weight=1.0 / (attn.heads * len(state.layers)),
                ),
            )
            if state.early_stop and state.complete:
                raise _StopUNet
        return self.default(
            attn,
            hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
            temb=temb,
        )


def install_capture(unet: UNet2DConditionModel, state: CaptureState) -> dict[str, object]:
    """Put capture processors on ``state.layers``; returns the previous processors for restore.

    Every other layer keeps its current processor (diffusers' default AttnProcessor2_0).
    """
    current = dict(unet.attn_processors)
    if any(isinstance(p, CaptureProcessor) for p in current.values()):
        raise RuntimeError("capture processors are already installed on this UNet; remove() first")
    cross = sorted(
        key for key in current if unet.get_submodule(key[: -len(_SUFFIX)]).is_cross_attention
    )
    for key in state.layers:
        if key not in current:
            raise ValueError(f"no attention layer {key!r} in this UNet; cross-attention: {cross}")
        if key not in cross:
            raise ValueError(f"{key!r} is not a cross-attention layer; choose among {cross}")
    processors = dict(current)
    for key in state.layers:
        processors[key] = CaptureProcessor(key, state)
    unet.set_attn_processor(processors)
    return current


def restore_processors(unet: UNet2DConditionModel, previous: dict[str, object]) -> None:
    """Put back the processors returned by :func:`install_capture`."""
    unet.set_attn_processor(dict(previous))


def run_capture(
    unet: UNet2DConditionModel,
    state: CaptureState,
    sample: Tensor,
    timestep: int | Tensor,
    encoder_hidden_states: Tensor,
    early_stop: bool = True,
) -> Tensor:
    """One UNet forward with capture armed; returns the layer-mean maps [B, T, R, R].

    With ``early_stop`` the forward ends right after the last captured layer; the maps are the
    same either way because nothing after that layer feeds them.
    """
    state.begin(tuple(sample.shape[-2:]), early_stop)
    try:
        unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)
    except _StopUNet:
        pass
    except BaseException:
        state.reset()
        raise
    return state.finish()
