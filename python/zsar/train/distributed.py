"""Process-group setup for ``torchrun`` (DDP: NCCL on GPU, gloo on CPU). Nothing home-made."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a ``torchrun`` job; the defaults are a single process.

    Attributes:
        rank: this process's global rank (0 writes checkpoints, logs and merged outputs).
        world_size: the number of processes; collectives run only when it is above 1.
        local_rank: this process's rank on its machine (``LOCAL_RANK``), i.e. which GPU it uses.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device: torch.device) -> DistInfo:
    """Joins the process group torchrun describes in the environment (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The element-wise mean of ``values`` over all ranks (every rank gets it).

    Every rank must call it with a tensor of the same shape, on the process group's device
    (CUDA under NCCL).

    Args:
        values: this rank's tensor; left unchanged (the reduction runs on a copy).
        info: from :func:`init_from_env`; a single process returns ``values`` itself.

    Returns:
        The mean over ranks. A ratio of two such means is the global ratio (e.g. correct / total).
    """
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values)
        values /= info.world_size
    return values


def barrier(info: DistInfo) -> None:
    """Waits until every rank gets here (e.g. before rank 0 writes what the others produced);
    nothing for a single process.

    Args:
        info: from :func:`init_from_env`.
    """
    if info.enabled:
        dist.barrier()
