"""Capture the decoder cross-attention layers' queries and keys (METHOD.md §2).

A :class:`CaptureProcessor` replaces diffusers' default processor on the captured ``attn2``
layers only (through the public ``unet.set_attn_processor`` API). It returns exactly what the
default processor returns, so the UNet's own data path is unchanged, and on the side records
the layer's native-grid ``to_q(x)`` and ``to_k(context) / sqrt(d)`` into a shared
:class:`CaptureState`; the maps ``softmax(to_q(upsample(x)) to_k(context)^T / sqrt(d))`` are
computed from them afterwards (``skp_core.upsampled_attention``). Once the last captured layer
has run, the UNet forward is aborted: the rest of the decoder cannot change the maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import Tensor

from skp_core.upsampled_attention_plan import LayerQK

_SUFFIX = ".processor"


def processor_key(layer: str) -> str:
    """Normalize a layer name to its ``unet.attn_processors`` key (module name + .processor)."""
    return layer if layer.endswith(_SUFFIX) else layer + _SUFFIX


class _StopUNet(Exception):
    """Raised after the last captured layer to abandon the rest of the UNet forward."""


class CaptureState:
    """Per-forward accumulator shared by the capture processors of one UNet."""

    def __init__(self, layers: Sequence[str]) -> None:
        if not layers:
            raise ValueError("at least one layer must be captured")
        self.layers = tuple(processor_key(name) for name in layers)
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"duplicate capture layers: {self.layers}")
        self.active = False
        self.early_stop = True
        self.latent_hw: tuple[int, int] = (0, 0)
        self._captured: list[LayerQK] = []
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
        self._captured = []
        self._seen = []

    def add(self, layer: str, captured: LayerQK) -> None:
        """Record one layer's queries and keys."""
        if layer in self._seen:
            raise RuntimeError(f"layer {layer} ran twice in one forward")
        self._seen.append(layer)
        self._captured.append(captured)

    def finish(self) -> list[LayerQK]:
        """Every captured layer's q and k, in the order they ran; disarms the state.

        Each layer carries the weight 1 / (heads x layers), so the weighted sum is the mean.
        """
        try:
            if not self.complete:
                missing = [name for name in self.layers if name not in self._seen]
                raise RuntimeError(
                    f"capture incomplete: layers {missing} did not run (processors removed?)"
                )
            return list(self._captured)
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


def capture_layer(
    attn: Attention,
    hidden_states: Tensor,
    context: Tensor,
    latent_hw: tuple[int, int] = (0, 0),
    weight: float = 1.0,
) -> LayerQK:
    """One layer's native-grid queries and scaled keys, the inputs of its upsampled maps.

    METHOD: the (norm2-normalized) inputs of attn2 [B, h*w, C] are bicubically upsampled to
    R x R, then ``q = to_q(.)``. Upsampling acts on each channel over space and to_q on the
    channels at each position; both are linear (bicubic weights sum to one, so a bias commutes
    too), hence ``upsample(to_q(x)) == to_q(upsample(x))`` exactly: q is projected here on the
    native grid and the map computation upsamples whatever is cheapest (see
    ``skp_core.upsampled_attention``). A context shared by the batch (an expanded tensor) gives
    one k for all images. 1/sqrt(d) goes on k, the smallest tensor.
    """
    if attn.norm_q is not None or attn.norm_k is not None or attn.group_norm is not None:
        raise NotImplementedError("capture supports SD 1.x style attention (no q/k/group norm)")
    n = hidden_states.shape[1]
    grid = _spatial_shape(n, latent_hw)
    q = attn.to_q(hidden_states)  # [B, h*w, inner] on the native grid
    if context.shape[0] > 1 and context.stride(0) == 0:
        context = context[:1]  # the same context for every image: project it once
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    k = attn.to_k(context)  # [1 or B, T, inner]
    heads = attn.heads
    k = k * (1.0 / math.sqrt(k.shape[-1] // heads))
    return LayerQK(q=q, k=k, heads=heads, grid=grid, weight=weight)


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
                capture_layer(
                    attn,
                    hidden_states,
                    encoder_hidden_states,
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


def layer_problem(unet: UNet2DConditionModel, layers: Sequence[str]) -> str | None:
    """Why ``layers`` cannot be captured on this UNet (absent, or not cross-attention), or None."""
    current = unet.attn_processors
    cross = sorted(
        key for key in current if unet.get_submodule(key[: -len(_SUFFIX)]).is_cross_attention
    )
    for key in (processor_key(name) for name in layers):
        if key not in current:
            return f"no attention layer {key!r} in this UNet; its cross-attention layers: {cross}"
        if key not in cross:
            return f"{key!r} is not a cross-attention layer; choose among {cross}"
    return None


def install_capture(unet: UNet2DConditionModel, state: CaptureState) -> dict[str, object]:
    """Put capture processors on ``state.layers``; returns the previous processors for restore.

    Every other layer keeps its current processor (diffusers' default AttnProcessor2_0).
    """
    current = dict(unet.attn_processors)
    if any(isinstance(p, CaptureProcessor) for p in current.values()):
        raise RuntimeError("capture processors are already installed on this UNet; remove() first")
    problem = layer_problem(unet, state.layers)
    if problem is not None:
        raise ValueError(problem)
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
) -> list[LayerQK]:
    """One UNet forward with capture armed; returns every captured layer's q and k.

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
