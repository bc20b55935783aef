"""Images/latents + context -> per-image attention maps [B, T, R, R] (METHOD.md §1-2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from skp_core.attention_capture import (
    DEFAULT_CAPTURE_LAYERS,
    CaptureState,
    install_capture,
    restore_processors,
    run_capture,
)
from skp_core.backbone import Backbone
from skp_core.latents import images_to_latents, noise_latents_t0


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
    ) -> None:
        if feature_resolution < 1 or image_size < 8:
            raise ValueError("feature_resolution must be >= 1 and image_size >= 8")
        if max_batch is not None and max_batch < 1:
            raise ValueError("max_batch must be None or >= 1")
        self.backbone = backbone
        self.feature_resolution = int(feature_resolution)
        self.image_size = int(image_size)
        self.max_batch = max_batch
        self.early_stop = early_stop
        self.state = CaptureState(layers, self.feature_resolution)
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

    def maps_from_latents(self, z_t: Tensor, context: Tensor) -> Tensor:
        """Attention maps [B, T, R, R] (float32) of noised latents under ``context`` [T, D].

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
        out = []
        for chunk in self._chunks(z_t):
            sample = chunk.to(device=device, dtype=dtype)
            hidden = ctx.unsqueeze(0).expand(sample.shape[0], -1, -1)
            out.append(run_capture(unet, self.state, sample, 0, hidden, self.early_stop))
        return torch.cat(out) if len(out) > 1 else out[0]

    def maps(self, images: Tensor, context: Tensor, generator: torch.Generator) -> Tensor:
        """Images [B, 3, H, W] in [0, 1] -> maps [B, T, R, R]: encode, noise at t = 0, capture."""
        z = self.latents(images)
        return self.maps_from_latents(noise_latents_t0(z, generator), context)
