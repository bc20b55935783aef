"""Image -> VAE latent and the t = 0 noising step (METHOD.md §1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import Tensor


def images_to_latents(vae: AutoencoderKL, images: Tensor, image_size: int = 512) -> Tensor:
    """Encode RGB images in [0, 1] to scaled posterior-mean latents [B, 4, S/8, S/8] (float32).

    The aspect ratio is ignored (resize to ``image_size`` square) as in the reference; the
    posterior mean, not a sample, is used so that the latent of an image is deterministic.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    param = next(vae.parameters())
    x = images.to(device=param.device, dtype=torch.float32)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )
    x = (x * 2.0 - 1.0).to(param.dtype)
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean
    return mean.float() * float(vae.config.scaling_factor)


def alpha_bar_t0(
    beta_start: float = 0.00085, beta_end: float = 0.012, num_train_timesteps: int = 1000
) -> float:
    """Cumulative alpha at t = 0 of the scaled-linear schedule: 1 - beta_0 = 0.99915.

    The scaled-linear schedule is ``linspace(sqrt(beta_start), sqrt(beta_end), N) ** 2``; only
    its first entry matters at t = 0, ``beta_end`` and ``N`` are kept for documentation.
    """
    if num_train_timesteps < 1 or not 0.0 <= beta_start <= beta_end < 1.0:
        raise ValueError("need 0 <= beta_start <= beta_end < 1 and num_train_timesteps >= 1")
    beta_0 = math.sqrt(beta_start) ** 2
    return 1.0 - beta_0


def draw_noise(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    """Draw N(0, I) noise on the generator's device, then move it to ``like``'s device and dtype.

    Drawing where the generator lives makes a CPU generator give the same noise whatever device
    the model runs on.
    """
    eps = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return eps.to(device=like.device, dtype=like.dtype)


def add_noise_t0(z: Tensor, eps: Tensor) -> Tensor:
    """Forward-diffuse latents to t = 0 with given noise: ``sqrt(a0) z + sqrt(1 - a0) eps``."""
    a0 = alpha_bar_t0()
    return math.sqrt(a0) * z + math.sqrt(1.0 - a0) * eps


def noise_latents_t0(z: Tensor, generator: torch.Generator) -> Tensor:
    """Forward-diffuse latents to t = 0 with fresh noise from ``generator``."""
    return add_noise_t0(z, draw_noise(tuple(z.shape), generator, z))
