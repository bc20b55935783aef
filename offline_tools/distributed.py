"""torch.distributed helpers for `torchrun --nproc-per-node N skp-train ...`.

Why: the optimization and the precompute pass dominate training time and both split cleanly
over processes. Every rank draws each optimization step identically and computes its slice
(`skp_core.shard.Shard`); precompute hands each rank its own chunks of images and rank 0
gathers and writes them. Only rank 0 writes files; the others wait at barriers and read what
it wrote (a single machine, or a shared run directory).

Without torchrun's environment (RANK / WORLD_SIZE / LOCAL_RANK) everything here degrades to
a single process and no process group is created.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from skp_core.shard import Shard

__all__ = [
    "Distributed",
    "init_distributed",
    "torchrun_env",
]

# Rank 0 may run a cheap stage (selection, regression, report) while the others wait.
_TIMEOUT = datetime.timedelta(hours=2)


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) from torchrun's variables, or None when not launched so."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    return rank, world, local


@dataclass
class Distributed:
    """This process's place in the run; a plain single process when `world_size` is 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.initialized:
            dist.barrier()

    def all_reduce_sum(self, tensor: Tensor) -> None:
        """In-place sum over processes (the optimizer's gradient + loss reduction)."""
        if self.initialized:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)

    def shard(self) -> Shard | None:
        """The optimizer's share of each step, or None for a single process."""
        if not self.enabled:
            return None
        return Shard(self.rank, self.world_size, self.all_reduce_sum)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value on every rank (decisions must not diverge between processes)."""
        if not self.initialized:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's value, in rank order, on every rank."""
        if not self.initialized:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def close(self) -> None:
        if self.initialized and dist.is_initialized():
            dist.destroy_process_group()
            self.initialized = False


def init_distributed(device: str) -> tuple[Distributed, str]:
    """Join torchrun's process group (gloo on CPU, nccl on CUDA) and pick this rank's device.

    Returns the context and the device to use: with CUDA, `cuda:LOCAL_RANK`, so each process
    of a node drives its own GPU. Outside torchrun: a single-process context and `device`.
    """
    env = torchrun_env()
    if env is None or env[1] <= 1:
        return Distributed(), device
    rank, world, local = env
    use_cuda = device.startswith("cuda")
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA was requested but is not available on this machine")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend, "timeout": _TIMEOUT}
        if use_cuda:
            kwargs["device_id"] = torch.device(device)
        dist.init_process_group(**kwargs)
    return Distributed(rank, world, local, initialized=True), device
