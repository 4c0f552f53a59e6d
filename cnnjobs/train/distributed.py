"""What the workers tell each other once an epoch: rank 0's decisions, BatchNorm statistics, and timings.

Each helper is a no-op with one worker (or in Ray Train's local mode, where torch.distributed is not set up).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from cnnjobs.train.timing import PARTS


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def same_on_all_workers(metrics: dict[str, float]) -> dict[str, float]:
    """Rank 0's values on every worker: GPU kernels may differ in the last bit between workers, and decisions
    taken on validation metrics (best epoch, early stopping) must agree exactly."""
    if not _distributed():
        return metrics
    values = torch.tensor(list(metrics.values()), dtype=torch.float64, device=_device())
    dist.broadcast(values, src=0)
    return dict(zip(metrics, values.cpu().tolist()))


def sync_buffers(model: nn.Module) -> None:
    """Give every worker rank 0's buffers (BatchNorm running statistics) before evaluating: each worker scores
    its part of a split, and all parts must be scored by the same model."""
    if not _distributed():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def gather_timings(seconds: dict[str, float]) -> dict[str, float]:
    """The epoch's seconds per part (`time/wait_s`, ...), averaged over the workers, and each worker's when
    there are several (`time/<part>_s/w<rank>`)."""
    row = [seconds[part] for part in PARTS]
    if not _distributed():
        return {f"time/{part}_s": value for part, value in zip(PARTS, row)}
    local = torch.tensor(row, dtype=torch.float64, device=_device())
    gathered = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    table = torch.stack(gathered).cpu()
    out = {f"time/{part}_s": float(table[:, i].mean()) for i, part in enumerate(PARTS)}
    for rank, values in enumerate(table.tolist()):
        out.update({f"time/{part}_s/w{rank}": value for part, value in zip(PARTS, values)})
    return out
