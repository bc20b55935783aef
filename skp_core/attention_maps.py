"""Images/latents + context -> per-image attention maps [B, T, R, R] (METHOD.md §1-2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from skp_core.attention_capture import (
    CaptureState,
    install_capture,
    restore_processors,
    run_capture,
)
from skp_core.backbone import Backbone
from skp_core.config import DEFAULT_CAPTURE_LAYERS
from skp_core.latents import images_to_latents, noise_latents_t0
from skp_core.upsampled_attention import STRATEGIES, LayerQK, MapSettings, fused_maps
from skp_core.upsampled_attention_reference import reference_maps

MAP_METHODS = ("fused", "reference")
"""``fused``: the exact blocked computation (default); ``reference``: the written-out oracle."""


@dataclass
class CapturedAttention:
    """The captured layers of one batch, from which maps of any token subset are computed.

    One UNet forward serves every query of a training step: all tokens' maps without gradient
    for the candidate ranking, then the selected tokens' maps with gradient for the losses.
    """

    layers: list[LayerQK]
    settings: MapSettings
    method: str = "fused"

    def __post_init__(self) -> None:
        # Per-pixel log-sum-exp stores, filled by the first forward that computes them and
        # reused by the backward of kept tokens (views of them follow rows()). Only where a
        # backward can come: inference would pay for filling them and never read them.
        r2 = self.settings.resolution**2
        for layer in self.layers:
            if layer.lse is None and layer.q.requires_grad:
                dtype = torch.float64 if layer.q.dtype == torch.float64 else torch.float32
                batch = layer.q.shape[0]
                layer.lse = torch.empty(batch, layer.heads, r2, dtype=dtype, device=layer.q.device)
                layer.lse_known = torch.zeros(batch, dtype=torch.bool, device=layer.q.device)

    @property
    def batch(self) -> int:
        return int(self.layers[0].q.shape[0])

    def rows(self, start: int, stop: int) -> CapturedAttention:
        """The captures of images [start, stop) of the batch (gradients flow through)."""
        layers = [
            LayerQK(
                q=layer.q[start:stop],
                k=layer.k if layer.k.shape[0] == 1 else layer.k[start:stop],
                heads=layer.heads,
                grid=layer.grid,
                weight=layer.weight,
                lse=None if layer.lse is None else layer.lse[start:stop],
                lse_known=None if layer.lse_known is None else layer.lse_known[start:stop],
            )
            for layer in self.layers
        ]
        return CapturedAttention(layers, self.settings, self.method)

    def maps(self, tokens: Tensor | None = None, precomputed: Tensor | None = None) -> Tensor:
        """Maps [B, T, R, R], or [B, K, R, R] of ``tokens`` ([K] or [B, K]), float32.

        Differentiable in the context when grad mode is on. ``precomputed``: these very maps,
        already computed without gradient, so that only the backward is paid (fused only).
        """
        r = self.settings.resolution
        if self.method == "reference":
            flat = reference_maps(self.layers, r, tokens)
        else:
            if precomputed is not None:
                precomputed = precomputed.reshape(*precomputed.shape[:2], r * r)
            flat = fused_maps(self.layers, self.settings, tokens, precomputed)
        return flat.view(flat.shape[0], flat.shape[1], r, r)


class AttentionMapper:
    """Turns images (or cached latents) and a context into attention maps, one per image.

    The capture processors are installed once at construction; :meth:`remove` puts the UNet's
    previous processors back. Maps are float32 whatever the backbone dtype, and each image's
    map is independent of the other images of its batch.
    """

    def __init__(
        self,
        backbone: Backbone,
        layers: Sequence[str] = DEFAULT_CAPTURE_LAYERS,
        feature_resolution: int = 128,
        image_size: int = 512,
        max_batch: int | None = None,
        early_stop: bool = True,
        map_method: str = "fused",
        map_strategy: str = "auto",
        map_dtype: torch.dtype | None = None,
        block_pixels: int | None = None,
    ) -> None:
        if feature_resolution < 1 or image_size < 8:
            raise ValueError(
                f"feature_resolution must be >= 1 (got {feature_resolution}) and image_size "
                f">= 8 (got {image_size})"
            )
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be None or >= 1, got {max_batch}")
        if map_method not in MAP_METHODS:
            raise ValueError(f"unknown map_method {map_method!r}; choose one of {MAP_METHODS}")
        if map_strategy not in STRATEGIES:
            raise ValueError(f"unknown map_strategy {map_strategy!r}; choose one of {STRATEGIES}")
        if map_dtype not in (None, torch.float32) and backbone.device.type != "cuda":
            raise ValueError(
                f"map_dtype {map_dtype} is for CUDA devices; the backbone is on {backbone.device}"
            )
        self.backbone = backbone
        self.feature_resolution = int(feature_resolution)
        self.image_size = int(image_size)
        self.max_batch = max_batch
        self.early_stop = early_stop
        self.map_method = map_method
        self.map_settings = MapSettings(
            resolution=self.feature_resolution,
            strategy=map_strategy,
            block_pixels=block_pixels,
            dtype=map_dtype,
        )
        self.state = CaptureState(layers)
        self.layers = self.state.layers
        self._previous: dict[str, object] | None = install_capture(backbone.unet, self.state)

    @property
    def installed(self) -> bool:
        """Whether the capture processors are on the UNet."""
        return self._previous is not None

    def remove(self) -> None:
        """Restore the UNet's previous attention processors (idempotent)."""
        if self._previous is not None:
            restore_processors(self.backbone.unet, self._previous)
            self._previous = None

    def _chunks(self, x: Tensor) -> list[Tensor]:
        """Split a batch into pieces of at most ``max_batch`` images."""
        if self.max_batch is None or x.shape[0] <= self.max_batch:
            return [x]
        return list(torch.split(x, self.max_batch))

    def latents(self, images: Tensor) -> Tensor:
        """Scaled VAE posterior means [B, 4, S/8, S/8] (float32, no grad) of images in [0, 1].

        The VAE costs about as much as the UNet, so callers cache these for un-augmented images.
        """
        vae = self.backbone.vae
        return torch.cat(
            [images_to_latents(vae, chunk, self.image_size) for chunk in self._chunks(images)]
        )

    def capture(self, z_t: Tensor, context: Tensor) -> CapturedAttention:
        """Run the UNet on noised latents under ``context`` [T, D]; keep each layer's q and k.

        The UNet runs at timestep 0 with the context broadcast as every image's
        ``encoder_hidden_states``. Gradients reach ``context`` when grad mode is on.
        """
        if not self.installed:
            raise RuntimeError("the capture processors were removed from this mapper's UNet")
        if context.ndim != 2 or context.shape[1] != self.backbone.context_dim:
            raise ValueError(
                f"context must be [T, {self.backbone.context_dim}], got {tuple(context.shape)}"
            )
        if z_t.ndim != 4:
            raise ValueError(f"latents must be [B, C, h, w], got {tuple(z_t.shape)}")
        unet = self.backbone.unet
        device, dtype = self.backbone.device, self.backbone.dtype
        ctx = context.to(device=device, dtype=dtype)
        chunks = []
        for chunk in self._chunks(z_t):
            sample = chunk.to(device=device, dtype=dtype)
            hidden = ctx.unsqueeze(0).expand(sample.shape[0], -1, -1)
            chunks.append(run_capture(unet, self.state, sample, 0, hidden, self.early_stop))
        layers = chunks[0]
        if len(chunks) > 1:
            layers = [_concat(parts) for parts in zip(*chunks, strict=True)]
        return CapturedAttention(layers, self.map_settings, self.map_method)

    def maps_from_latents(
        self, z_t: Tensor, context: Tensor, tokens: Tensor | None = None
    ) -> Tensor:
        """Attention maps [B, T, R, R] (float32) of noised latents under ``context`` [T, D].

        With ``tokens`` ([K] or [B, K]) only those maps, [B, K, R, R]: the same values as the
        full maps at a fraction of the cost. Gradients reach ``context`` when grad mode is on.
        """
        return self.capture(z_t, context).maps(tokens)

    def maps(
        self,
        images: Tensor,
        context: Tensor,
        generator: torch.Generator,
        tokens: Tensor | None = None,
    ) -> Tensor:
        """Images [B, 3, H, W] in [0, 1] -> maps [B, T, R, R]: encode, noise at t = 0, capture."""
        z = self.latents(images)
        return self.maps_from_latents(noise_latents_t0(z, generator), context, tokens)


def _concat(parts: Sequence[LayerQK]) -> LayerQK:
    """One layer's captures of consecutive batch chunks as one batch."""
    first = parts[0]
    # Chunks that share the context projected the same k: one of them carries every image's
    # gradient to the context just as well.
    k = first.k if first.k.shape[0] == 1 else torch.cat([p.k for p in parts])
    return LayerQK(
        q=torch.cat([p.q for p in parts]),
        k=k,
        heads=first.heads,
        grid=first.grid,
        weight=first.weight,
    )
