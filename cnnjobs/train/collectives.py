"""Every message between the workers goes through this module: the only one of cnnjobs that calls torch.distributed
(DDP's gradient all-reduce aside, which torch does inside `backward`).

A process group carries the tensors of its backend's devices only: NCCL carries CUDA tensors ("No backend type
associated with device type cpu" for a CPU one), gloo CPU ones. GPU workers get a composite group
(`GPU_BACKEND`: gloo for CPU tensors, NCCL for CUDA ones), and each collective here puts its tensor on a device the
group carries (`device_for`), the one it is on when it can: a collective is legal under every backend by
construction, not by the luck of which tensors reach it. Each function is a no-op with one worker (or in Ray Train's
local mode, where no process group exists).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

GPU_BACKEND = "cpu:gloo,cuda:nccl"
CPU_BACKEND = "gloo"


def backend_for(use_gpu: bool) -> str:
    """The process group backend of a job's workers."""
    return GPU_BACKEND if use_gpu else CPU_BACKEND


def device_types(backend: str) -> set[str]:
    """The device types a process group of `backend` carries (`nccl`: cuda; `gloo`: cpu and, for some
    collectives, cuda; a composite such as `cpu:gloo,cuda:nccl`: the devices it names)."""
    if ":" in backend:
        return {item.split(":", 1)[0] for item in backend.split(",")}
    return {"nccl": {"cuda"}, "gloo": {"cpu"}}.get(backend, {"cpu"})


def device_for(backend: str, preferred: torch.device) -> torch.device:
    """Where a tensor must be for a collective of `backend`: `preferred` (where it is) when the group carries it,
    else the group's device (the current CUDA device, or the CPU)."""
    carried = device_types(backend)
    if preferred.type in carried:
        return preferred
    if "cuda" in carried:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def distributed() -> bool:
    """More than one worker, talking through a process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _on_group(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(device_for(dist.get_backend(), tensor.device))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over all workers, on `tensor`'s device."""
    if not distributed():
        return tensor
    moved = _on_group(tensor)
    dist.all_reduce(moved)
    return moved.to(tensor.device)


def from_rank_zero(tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's `tensor` on every worker, on `tensor`'s device."""
    if not distributed():
        return tensor
    moved = _on_group(tensor)
    dist.broadcast(moved, src=0)
    return moved.to(tensor.device)


def gathered(tensor: torch.Tensor) -> torch.Tensor:
    """Every worker's `tensor`, stacked by rank (one row with a single worker)."""
    if not distributed():
        return tensor.unsqueeze(0)
    moved = _on_group(tensor)
    parts = [torch.zeros_like(moved) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, moved)
    return torch.stack(parts).to(tensor.device)


def same_on_all_workers(metrics: dict[str, float]) -> dict[str, float]:
    """Rank 0's values on every worker: GPU kernels may differ in the last bit between workers, and decisions
    taken on validation metrics (best epoch, early stopping) must agree exactly."""
    if not distributed():
        return metrics
    values = from_rank_zero(torch.tensor(list(metrics.values()), dtype=torch.float64))
    return dict(zip(metrics, values.tolist()))


def sync_buffers(model: nn.Module) -> None:
    """Give every worker rank 0's buffers (BatchNorm running statistics) before evaluating: each worker scores
    its part of a split, and all parts must be scored by the same model."""
    if not distributed():
        return
    for buffer in model.buffers():
        buffer.data.copy_(from_rank_zero(buffer.data))
