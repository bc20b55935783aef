"""Token optimization (METHOD §3): learn a context whose attention maps are keypoints.

Per step, the images and one random affine view of each are run through the UNet as one
batched pass; candidate tokens are ranked on the original maps, spread by furthest point
sampling on the transformed ones, and pushed towards single sharp peaks (localization) that
move with the image (equivariance). Only the context is trained.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from skp_core.affine import sample_affine, warp
from skp_core.attention_maps import AttentionMapper
from skp_core.candidates import rank_candidates
from skp_core.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from skp_core.config import MethodConfig
from skp_core.furthest_point_sampling import spread_candidates
from skp_core.image_batch import image_of, stack_resized
from skp_core.latents import add_noise_t0, draw_noise
from skp_core.losses import keypoint_losses
from skp_core.progress import progress
from skp_core.shard import Shard

# A source of training images: len() and [i] -> [3, H, W] in [0, 1] or a dict with "image".
ImageSource = Sequence[Any]
__all__ = ["ImageSource", "OptimizationError", "OptimizationResult", "Shard", "TokenOptimizer"]


# Settings the optimization never reads (plus the step budget): a checkpoint may be resumed
# with other values of these, e.g. to train longer or to evaluate with more views.
RESUME_FREE_SETTINGS = frozenset(
    {
        "steps",
        "selection_images",
        "selection_sigma",
        "num_views",
        "include_identity_view",
        "view_space",
        "max_loc_strategy",
        "max_loc_distance",
    }
)


def resumable_settings(config: MethodConfig | dict[str, Any]) -> dict[str, Any]:
    """The settings a checkpoint must match to be resumed under `config`.

    A setting missing from an older checkpoint's record takes its default: settings are only
    ever added with a default that computes what the code did before them.
    """
    if isinstance(config, MethodConfig):
        data = config.to_dict()
    else:
        data = {**MethodConfig().to_dict(), **dict(config)}
    return {k: v for k, v in data.items() if k not in RESUME_FREE_SETTINGS}


class OptimizationError(RuntimeError):
    """The optimization cannot go on (e.g. a non-finite loss); the last checkpoint is kept."""


@dataclass
class OptimizationResult:
    context: Tensor
    steps_done: int
    history: list[dict[str, float]] = field(default_factory=list)


def initial_context(num_tokens: int, dim: int, seed: int) -> Tensor:
    """randn init with std 1 (METHOD §1), from its own seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_tokens, dim, generator=generator)


class TokenOptimizer:
    """Runs, checkpoints and resumes the optimization of one context.

    `gradient_hook` (if given) is called on the context gradient before each optimizer step;
    distributed training uses it to all-reduce gradients across processes. With `shard`, this
    process computes only its rows of every step (see `Shard`), all-reduces the gradient and
    losses itself, and only rank 0 writes checkpoints (every rank resumes from them).
    """

    def __init__(
        self,
        mapper: AttentionMapper,
        images: ImageSource,
        config: MethodConfig,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 50,
        gradient_hook: Callable[[Tensor], None] | None = None,
        sample_offset: int = 0,
        progress: bool = True,
        shard: Shard | None = None,
    ) -> None:
        config.validate()
        if len(images) == 0:
            raise ValueError("no training images")
        if shard is not None and shard.world_size > config.images_per_step:
            raise ValueError(
                f"images_per_step ({config.images_per_step}) must be at least the number of "
                f"processes ({shard.world_size}): each process needs an image of every step"
            )
        self.shard = shard
        self.mapper = mapper
        self.images = images
        self.config = config
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.gradient_hook = gradient_hook
        self.sample_offset = sample_offset
        self.progress = progress
        device = mapper.backbone.device
        self.device = device
        self.context = initial_context(config.num_tokens, mapper.backbone.context_dim, config.seed)
        self.context = self.context.to(device).requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.context], lr=config.lr)
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self._latents: dict[int, Tensor] = {}
        self._resume_tried = False

    # -- checkpoints ---------------------------------------------------------------------
    def state_tensors(self) -> dict[str, Tensor]:
        tensors = {"context": self.context.detach(), "generator": self.generator.get_state()}
        state = self.optimizer.state.get(self.context)
        if state:
            tensors["adam.exp_avg"] = state["exp_avg"]
            tensors["adam.exp_avg_sq"] = state["exp_avg_sq"]
            tensors["adam.step"] = torch.as_tensor(state["step"], dtype=torch.float32).reshape(1)
        return tensors

    def save(self) -> None:
        if self.checkpoint_dir is None or (self.shard is not None and self.shard.rank != 0):
            return
        meta = {
            "step": self.step,
            "config": self.config.to_dict(),
            "history": self.history,
            "sample_offset": self.sample_offset,
        }
        save_checkpoint(self.checkpoint_dir, self.state_tensors(), meta)

    def try_resume(self) -> bool:
        """Continue from the checkpoint in checkpoint_dir, if there is one.

        Called by :meth:`run` unless the caller already did (to report it its own way).
        """
        self._resume_tried = True
        if self.checkpoint_dir is None or not has_checkpoint(self.checkpoint_dir):
            return False
        tensors, meta = load_checkpoint(self.checkpoint_dir)
        # Everything the optimization reads must match: a run may be resumed to go on longer.
        if resumable_settings(meta.get("config", {})) != resumable_settings(self.config):
            raise OptimizationError(
                f"the checkpoint in {self.checkpoint_dir} was made with other settings; "
                "use a new output directory or the same settings to resume"
            )
        with torch.no_grad():
            self.context.copy_(tensors["context"].to(self.device))
        self.generator.set_state(tensors["generator"])
        if "adam.exp_avg" in tensors:
            self.optimizer.state[self.context] = {
                "step": tensors["adam.step"].reshape(()).clone(),
                "exp_avg": tensors["adam.exp_avg"].to(self.device),
                "exp_avg_sq": tensors["adam.exp_avg_sq"].to(self.device),
            }
        self.step = int(meta["step"])
        self.history = list(meta.get("history", []))
        return True

    def resume_message(self, total: int | None = None) -> str:
        """'resuming at step N of M from DIR': what a resumed run says first."""
        total = self.config.steps if total is None else total
        return f"resuming at step {self.step} of {total} from {self.checkpoint_dir}"

    # -- one step -------------------------------------------------------------------------
    def _batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Images of the given indices; latents of originals cached (no grad)."""
        images = stack_resized(
            [image_of(self.images[int(i)]) for i in indices], self.config.image_size, self.device
        )
        for row, index in enumerate(indices.tolist()):
            if index not in self._latents:
                # One image at a time: a cached latent must not depend on which other images
                # shared its VAE batch, or a resumed run would differ from an uninterrupted one.
                self._latents[index] = self.mapper.latents(images[row : row + 1])[0]
        latents = torch.stack([self._latents[int(i)] for i in indices])
        return images, latents

    def _keypoint_maps(self, z_t: Tensor) -> tuple[Tensor, Tensor]:
        """Selected maps [n, K, R, R] of the originals and of their views, with gradient.

        z_t holds the n originals, then their n views. One UNet pass serves it all: every
        token's map of the originals (no grad) ranks the candidates, the candidates' maps of the
        views place them for furthest point sampling, and only the K chosen tokens' maps carry
        gradient, their values reused from those no-grad maps.
        """
        cfg = self.config
        n = z_t.shape[0] // 2
        captured = self.mapper.capture(z_t, self.context)
        with torch.no_grad():
            full = captured.rows(0, n).maps()
            candidates = rank_candidates(
                full, cfg.num_candidates, cfg.sigma, cfg.top_k_strategy, cfg.num_subjects
            )
            candidate_maps = captured.rows(n, 2 * n).maps(candidates)
            picked = spread_candidates(candidates, candidate_maps, cfg.top_k)
            tokens = candidates.gather(1, picked)
            index = tokens[:, :, None, None].expand(-1, -1, *full.shape[-2:])
            values = torch.cat(
                [
                    full.gather(1, index),
                    candidate_maps.gather(1, picked[:, :, None, None].expand_as(index)),
                ]
            )
        selected = captured.maps(torch.cat([tokens, tokens]), precomputed=values)
        return selected[:n], selected[n:]

    def train_step(self) -> dict[str, float]:
        cfg = self.config
        n = cfg.images_per_step
        rows = slice(0, n) if self.shard is None else self.shard.rows(n)
        # The whole step is drawn in the same order whatever the shard: indices, views, noise.
        indices = torch.randint(len(self.images), (n,), generator=self.generator)
        theta = sample_affine(
            n,
            self.generator,
            rotation_deg=cfg.rotation_deg,
            scale_range=(cfg.scale_min, cfg.scale_max),
            translation=cfg.translation,
            device=self.device,
        )[rows]
        images, latents = self._batch(indices[rows])
        transformed_latents = self.mapper.latents(warp(images, theta))
        z = torch.cat([latents, transformed_latents])
        eps = draw_noise((2 * n, *z.shape[1:]), self.generator, z)
        if self.shard is not None:
            eps = torch.cat([eps[rows], eps[n:][rows]])
        z_t = add_noise_t0(z, eps)
        self.optimizer.zero_grad(set_to_none=True)
        original, transformed = self._keypoint_maps(z_t)
        terms = keypoint_losses(
            original,
            transformed,
            theta,
            sigma=cfg.sigma,
            equivariance_weight=cfg.equivariance_weight,
            localization_weight=cfg.localization_weight,
            num_subjects=cfg.num_subjects,
        )
        losses = torch.stack([terms.total, terms.equivariance, terms.localization])
        if self.shard is None:
            terms.total.backward()
        else:
            # Losses are means over images: weight this shard by its share, then sum.
            share = original.shape[0] / n
            (terms.total * share).backward()
            grad = self.context.grad
            packed = torch.cat([grad.flatten(), losses.detach().to(grad.dtype) * share])
            self.shard.all_reduce_sum(packed)
            grad.copy_(packed[: grad.numel()].view_as(grad))
            losses = packed[grad.numel() :]
        if self.gradient_hook is not None:
            self.gradient_hook(self.context.grad)
        values = losses.tolist()
        if not all(math.isfinite(v) for v in values):
            raise OptimizationError(
                f"non-finite loss at step {self.step + 1} ({values}); the last good checkpoint "
                f"is kept{f' in {self.checkpoint_dir}' if self.checkpoint_dir else ''}. "
                "Lower the learning rate or check the input images."
            )
        self.optimizer.step()
        self.step += 1
        record = {
            "step": self.step,
            "loss": values[0],
            "equivariance": values[1],
            "localization": values[2],
        }
        self.history.append(record)
        return record

    def run(
        self,
        steps: int | None = None,
        on_step: Callable[[dict[str, float]], object] | None = None,
    ) -> OptimizationResult:
        """Run up to `steps` (default: config.steps) total steps, resuming if possible.

        ``on_step`` sees each step's record (step, loss and its terms), e.g. for a logger.
        """
        total = self.config.steps if steps is None else steps
        if not self._resume_tried and self.try_resume() and self.progress:
            tqdm.write(self.resume_message(total), file=sys.stderr)  # beside the progress
        bar = progress(
            total=total,
            initial=self.step,
            desc="optimize tokens",
            unit="step",
            disable=not self.progress,
        )
        start = time.perf_counter()
        try:
            while self.step < total:
                record = self.train_step()
                if on_step is not None:
                    on_step(record)
                bar.set_postfix(
                    loss=f"{record['loss']:.4g}",
                    equi=f"{record['equivariance']:.3g}",
                    loc=f"{record['localization']:.3g}",
                )
                bar.update(1)
                if self.step % self.checkpoint_every == 0 or self.step == total:
                    self.save()
        finally:
            bar.close()
        elapsed = time.perf_counter() - start
        if self.progress and self.history:
            first, last = self.history[0]["loss"], self.history[-1]["loss"]
            tqdm.write(
                f"optimized {self.step} steps in {elapsed:.1f} s; loss {first:.4g} -> {last:.4g}"
            )
        return OptimizationResult(self.context.detach().clone(), self.step, list(self.history))
