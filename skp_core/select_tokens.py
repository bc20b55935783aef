"""Best-token selection after optimization (METHOD §4).

The optimized context has many tokens; the keypoints are the ones that most often come out of
the per-image candidate ranking + furthest point sampling, counted over many training images.
"""

from __future__ import annotations

import torch
from torch import Tensor

from skp_core.attention_maps import AttentionMapper
from skp_core.furthest_point_sampling import select_keypoint_tokens
from skp_core.image_batch import image_of, stack_resized
from skp_core.optimize import ImageSource
from skp_core.progress import progress as progress_bar


def count_token_selections(
    maps: Tensor,
    num_candidates: int,
    top_k: int,
    sigma: float,
    num_tokens: int,
    strategy: str = "gaussian",
    num_subjects: int = 1,
) -> Tensor:
    """How often each token [num_tokens] is picked across a batch of maps [B, T, R, R]."""
    picked = select_keypoint_tokens(
        maps, maps, num_candidates, top_k, sigma, strategy, num_subjects
    )
    return torch.bincount(picked.flatten(), minlength=num_tokens)


def most_frequent_tokens(counts: Tensor, top_k: int) -> Tensor:
    """The top_k most frequent tokens; ties go to the lower token index (stable sort)."""
    order = torch.sort(counts, descending=True, stable=True).indices
    return order[:top_k].clone()


@torch.no_grad()
def select_best_tokens(
    mapper: AttentionMapper,
    images: ImageSource,
    context: Tensor,
    *,
    num_images: int = 100,
    num_candidates: int = 25,
    top_k: int = 10,
    sigma: float = 2.0,
    batch_size: int = 4,
    seed: int = 0,
    progress: bool = True,
    top_k_strategy: str = "gaussian",
    num_subjects: int = 1,
) -> tuple[Tensor, Tensor]:
    """(selected token indices [top_k], selection counts [T]) over random training images."""
    generator = torch.Generator().manual_seed(seed)
    count = min(num_images, len(images))
    order = torch.randperm(len(images), generator=generator)[:count].tolist()
    counts = torch.zeros(context.shape[0], dtype=torch.long, device=mapper.backbone.device)
    batches = range(0, count, batch_size)
    for start in progress_bar(batches, desc="select tokens", disable=not progress, unit="batch"):
        batch = stack_resized(
            [image_of(images[i]) for i in order[start : start + batch_size]],
            mapper.image_size,
            mapper.backbone.device,
        )
        maps = mapper.maps(batch, context, generator)
        picked = count_token_selections(
            maps, num_candidates, top_k, sigma, context.shape[0], top_k_strategy, num_subjects
        )
        counts += picked.to(counts.device)
    return most_frequent_tokens(counts.cpu(), top_k), counts.cpu()
