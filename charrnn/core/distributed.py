"""Several processes through torchrun and PyTorch DistributedDataParallel.

    torchrun --nproc_per_node=4 -m charrnn train corpus.txt

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything here is a no-op and
training runs in one process. NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, n: int) -> tuple[int, int]:
        """This rank's share [start, stop) of n batch rows (streams)."""
        return self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size


def from_env() -> Dist:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def init(d: Dist, device: torch.device) -> None:
    if d.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)


def shutdown(d: Dist, wait: bool = True) -> None:
    """Leave the process group; with `wait`, once every rank is done with its collectives
    (not after a failure, where the others may never arrive)."""
    if d.enabled and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(d: Dist, tensor: torch.Tensor) -> torch.Tensor:
    if d.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_rows(d: Dist, tensor: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Concatenate every rank's rows along `dim` (ranks own consecutive rows)."""
    if not d.enabled:
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(d.world_size)]
    dist.all_gather(sizes, torch.tensor([tensor.shape[dim]], device=tensor.device))
    parts = []
    for n in sizes:
        shape = list(tensor.shape)
        shape[dim] = int(n.item())
        parts.append(torch.empty(shape, dtype=tensor.dtype, device=tensor.device))
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=dim)
