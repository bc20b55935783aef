"""Data-parallel sharding of an optimization step (torchrun): which rows each process computes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

__all__ = ["Shard", "shard_slice"]


def shard_slice(n: int, rank: int, world_size: int) -> slice:
    """Contiguous, balanced block of n items for `rank`; blocks concatenate in rank order."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + int(rank < extra))


@dataclass(frozen=True)
class Shard:
    """This process's share of each step in a data-parallel run (e.g. under torchrun).

    Every process draws the whole step (image indices, views, noise) from the same generator
    and computes only rows `rows(n)` of it, so the union over processes is exactly the
    single-process batch. `all_reduce_sum` sums a tensor in place across processes; it carries
    the context gradient and the loss terms in one call, so every process takes the same Adam
    step and sees the same (global) losses, and a non-finite loss stops all of them together.
    """

    rank: int
    world_size: int
    all_reduce_sum: Callable[[Tensor], None]

    def rows(self, n: int) -> slice:
        """This rank's rows of a step of n images."""
        return shard_slice(n, self.rank, self.world_size)
