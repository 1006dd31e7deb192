"""Training across processes (``torchrun --nproc_per_node=N -m s2s train RECIPE``): PyTorch DDP over NCCL on
GPUs and gloo on CPUs. A single process is the same code with a world of one, where every call is free.

The recipe's batch size is the global batch: every process draws the same epoch of batches and trains on its
share of each one, and gradients are scaled so that one step equals one step of a single process on the whole
batch. Checkpoints therefore do not depend on the process count, and a run resumes on any number of processes.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Processes:
        """What torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK); one process when they are absent."""
        return cls(
            int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
        )

    @property
    def main(self) -> bool:
        """The process that validates, logs and writes checkpoints."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.world > 1 else device

    def start(self, device: torch.device) -> None:
        if self.world > 1 and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def end(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def share(self, batch: list[int]) -> tuple[list[int], bool]:
        """This process's part of a global batch, and whether it counts (a batch smaller than the world leaves
        some processes without examples: they repeat the first one with weight zero, so every process steps)."""
        mine = batch[self.rank :: self.world]
        return (mine, True) if mine else (batch[:1], False)

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every process if it is true on one (stopping must be agreed, or the others would wait)."""
        return flag if self.world == 1 else self.sum([float(flag)], device)[0] > 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if self.world == 1:
            return model
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )


def relaunch_with_torchrun(nproc: int) -> None:
    """Replace this process by ``torchrun --nproc_per_node=N -m s2s train …`` with the same arguments."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "s2s", *args]
    os.execv(sys.executable, command)
