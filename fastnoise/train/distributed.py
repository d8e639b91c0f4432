"""torch.distributed plumbing for ``torchrun --nproc_per_node=N -m fastnoise train ...``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything is one process.
NCCL on GPUs, gloo on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "setup",
    "cleanup",
    "all_reduce_sum",
    "all_gather_objects",
    "average_across_ranks",
    "barrier",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_request: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group if launched by torchrun; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = device_request == "cuda" or (device_request == "auto" and torch.cuda.is_available())
    if device_request not in ("auto", "cuda", "cpu") and not device_request.startswith("cuda:"):
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device_request!r}"
        )
    if world > 1:
        if want_cuda:
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return DistInfo(rank, world, local), device
    if device_request.startswith("cuda:"):
        return DistInfo(), torch.device(device_request)
    return DistInfo(), torch.device("cuda" if want_cuda else "cpu")


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: dict[str, torch.Tensor], info: DistInfo) -> dict[str, torch.Tensor]:
    """Sum each tensor over the ranks (one collective for all of them)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    flat = torch.stack([values[k].detach().double().reshape(()) for k in keys])
    dist.all_reduce(flat)
    return dict(zip(keys, flat.unbind(), strict=True))


def average_across_ranks(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The mean of each tensor over the ranks, as DDP averages the gradients it sees; for
    gradients taken outside DDP (Learn2Perturb's theta pass). One process: unchanged."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    parts = flat.split([t.numel() for t in tensors])
    return [part.view_as(t) for part, t in zip(parts, tensors, strict=True)]


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
