"""torchrun / DistributedDataParallel helpers for the training loop.

Offered:

* :class:`DistInfo` - rank, world size and device of this process.
* :func:`init_distributed` - read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and
  start the process group (nccl on GPU, gloo on CPU); a plain single process otherwise.
* :func:`all_reduce_sum`, :func:`average_gradients`, :func:`barrier`, :func:`cleanup`.

Only rank 0 writes files; every rank runs the same steps on its shard of the data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the torchrun process group if the environment says so (gloo on CPU, nccl on GPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = torch.device(device)
    if world_size <= 1:
        return DistInfo(0, 1, 0, wanted)
    on_gpu = wanted.type == "cuda"
    if on_gpu:
        torch.cuda.set_device(local_rank)
        wanted = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if on_gpu else "gloo")
    return DistInfo(rank, world_size, local_rank, wanted)


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``values`` over ranks (a no-op in a single process)."""
    if info.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def average_gradients(model: nn.Module, info: DistInfo) -> None:
    """Average ``param.grad`` over ranks: how a non-backprop rule's estimates are combined."""
    if not info.distributed:
        return
    for param in model.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad /= info.world_size


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
