"""Optional data-parallel training under ``torchrun`` (gloo on CPU, NCCL on GPU)."""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was requested but CUDA is not available; use device='cpu'")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def setup(device: str) -> DistContext:
    """Join the process group that ``torchrun`` describes in ``WORLD_SIZE``/``RANK`` (if any) and pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        # left to the interpreter's exit, gloo's threads can be destroyed while still joinable: the rank then
        # aborts ("terminate called without an active exception") after its work is done
        atexit.register(_leave_process_group)
    if dist.is_available() and dist.is_initialized():
        return DistContext(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, device=dev)
    return DistContext(rank=0, world=1, local_rank=0, device=dev)


def _leave_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(ctx: DistContext, values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64)."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.cpu().tolist()


def all_gather_objects(ctx: DistContext, obj) -> list:
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (``model`` itself when it is not wrapped)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
