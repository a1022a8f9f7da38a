"""The only place that knows about ``torch.distributed``: ranks, sums across processes, set-up from torchrun.

``torchrun --nproc_per_node=N -m dlsec train ...`` sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the rendezvous
address; :func:`init_from_env` joins the group (gloo on CPU, nccl on CUDA). A Python user who already called
``torch.distributed.init_process_group`` needs nothing more: the trainer reads the group it finds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import distributed as dist

from dlsec.errors import ConfigError

__all__ = ["Dist", "current", "init_from_env", "shutdown", "world_from_env"]


@dataclass(frozen=True)
class Dist:
    """This process's place in the group: ``rank`` of ``world`` processes (0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes outputs and reports progress (rank 0)."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This process's contiguous share of ``n`` items (sizes differ by at most one, lower ranks first)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``t`` over all processes (``t`` itself when not distributed)."""
        if self.world > 1:
            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t


def current() -> Dist:
    """The process group this process belongs to, if any."""
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size())
    return Dist()


def world_from_env() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when absent)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def init_from_env(device: str) -> tuple[bool, str]:
    """Join the group torchrun describes; return (whether this call started it, this process's device).

    With CUDA each process takes the GPU of its ``LOCAL_RANK``.
    """
    world = world_from_env()
    if world <= 1:
        return False, device
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed")
    cuda = device.startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if dist.is_initialized():
        return False, device
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True, device


def shutdown() -> None:
    """Leave the process group (after the last collective)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
