"""Data-parallel training under ``torchrun``: one process per replica, gradients averaged.

``torchrun --nproc_per_node N rmsmp quantize ...`` (or ``benchmarks/accuracy.py``) starts N
processes; each reads the world from torchrun's environment (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, rendezvous address), joins a process group (nccl on GPUs, gloo on CPU) and
trains a DistributedDataParallel replica on its slice of every global batch. Without torchrun
the world is one process and nothing here touches ``torch.distributed``.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class World:
    """This process's place among the replicas."""

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0: the one that prints, evaluates and writes files."""
        return self.rank == 0


def env_rank() -> int:
    """The rank torchrun gave this process (0 outside torchrun), readable before any setup."""
    return int(os.environ.get("RANK", "0"))


def init_world() -> World:
    """The world of this process; joins (once) the process group when torchrun started several."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else None
    if not dist.is_initialized():
        if device is not None:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
        atexit.register(dist.destroy_process_group)
    return World(dist.get_rank(), dist.get_world_size(), device or torch.device("cpu"))


def shard(world: World, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """This replica's rows of a global batch (every ``size``-th, from ``rank``), on its device."""
    return tuple(t[world.rank :: world.size].to(world.device) for t in tensors)


def wrap(model: nn.Module, world: World) -> nn.Module:
    """``model`` itself for one process; else a DDP replica (rank 0's weights broadcast now).

    On GPUs the BatchNorms become SyncBatchNorm first, so a replica normalises by the global
    batch as one process would; gloo on CPU has no SyncBatchNorm, so there each replica uses its
    own slice's statistics. Quantizers must be initialised before this (``init_act_steps``).
    """
    if world.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if world.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[world.device])
    return DistributedDataParallel(model)


def all_sum(world: World, *values: float) -> list[float]:
    """Each value summed over the replicas."""
    if world.size == 1:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return t.tolist()


def from_main(world: World, value: float) -> float:
    """Rank 0's ``value`` on every replica."""
    if world.size == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=world.device)
    dist.broadcast(t, 0)
    return float(t)
