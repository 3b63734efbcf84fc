"""Several processes (``torchrun --nproc_per_node K``): rank, world size and the few collectives the trainers use.

Every helper is a no-op on one process, so the single-process path has no special case.
Gradients are averaged by hand (:meth:`Dist.average_gradients`) rather than through
``DistributedDataParallel``: deep supervision takes several optimizer steps per batch and
TRM's halting shrinks each rank's batch at its own pace, which DDP's one-backward-per-forward
bookkeeping does not follow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    """This process's rank and the world size, with the collectives the losses need (no-ops on one process)."""

    rank: int = 0
    world: int = 1

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """All-reduce sum."""
        if self.world > 1:
            x = x.clone()
            dist.all_reduce(x)
        return x

    def max(self, x: torch.Tensor) -> torch.Tensor:
        """All-reduce maximum."""
        if self.world > 1:
            x = x.clone()
            dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return x

    def average_gradients(self, model: nn.Module) -> None:
        """Mean of every parameter's gradient over ranks (a rank without a gradient contributes zeros)."""
        if self.world == 1:
            return
        for p in model.parameters():
            if p.requires_grad:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad /= self.world


def init_distributed(device: str) -> Dist:
    """Join the process group that ``torchrun`` describes (NCCL on cuda, gloo otherwise); one process: ``Dist()``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(dist.get_rank(), world)


def rank_device(device: str, ddp: Dist) -> str:
    """``cuda:LOCAL_RANK`` for a multi-process cuda run, else ``device`` as given."""
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if device == "cuda" and ddp.world > 1 else device


def all_stop(ddp: Dist, stop: bool, device: str) -> bool:
    """Every rank stops at the same point: true when any rank wants to stop."""
    if ddp.world == 1:
        return stop
    return bool(ddp.sum(torch.tensor(float(stop), device=device)).item() > 0)


def close(ddp: Dist) -> None:
    """Leave the process group (multi-process runs)."""
    if ddp.world > 1:
        dist.destroy_process_group()
