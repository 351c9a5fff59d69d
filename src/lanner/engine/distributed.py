"""Several processes training one run (torch.distributed, DistributedDataParallel).

``lanner train DATA --devices N`` starts N processes on this machine through torchrun; on several
machines (with a shared file system for the data cache and the run directory), start lanner under
torchrun yourself (``torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:PORT -m -- lanner
train DATA``; the ``--`` keeps lanner's ``--run`` from being read as torchrun's ``--run-path``): a
process that finds ``WORLD_SIZE`` in its environment joins the group. GPUs talk over NCCL, CPU
processes over gloo (so the whole path is tested on a CPU-only machine).

The division of labour: every process trains on its own share of each epoch's batches (round k
gives process r the epoch's batch k x N + r, so an epoch still covers every image, the last round
wrapping to the epoch's first batches when the batches do not divide evenly: every process takes
the same number of steps). Gradients are averaged by DDP. Process 0 alone validates, writes
history, plots and checkpoints, and broadcasts the metrics, so every process takes the same
decisions (best epoch, early stopping). A Ctrl-C or SIGTERM seen by any process stops all of
them after the same step, and process 0 saves the resumable checkpoint.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn

from lanner.errors import ConfigError

# Process 0 builds the data cache while the others wait at a barrier: give that time.
SETUP_TIMEOUT = dt.timedelta(hours=2)


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Distributed()


def from_environment() -> Distributed:
    """The process's place in the group, from the variables torchrun sets (single when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def relaunch_under_torchrun(devices: int) -> None:
    """Replace this process with torchrun starting ``devices`` copies of the same command."""
    if devices < 1:
        raise ConfigError(f"--devices {devices}: need at least 1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}"]
    # "--": the command's own options (--run ...) must not be read as torchrun's (--run-path).
    os.execv(sys.executable, [*command, "-m", "--", "lanner", *sys.argv[1:]])


def start(dist: Distributed, device: torch.device) -> torch.device:
    """Join the process group; returns this process's device (its own GPU under CUDA)."""
    if not dist.enabled:
        return device
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if dist.local_rank >= gpus:
            raise ConfigError(
                f"process {dist.local_rank} of this machine has no GPU of its own ({gpus} GPUs): "
                f"use --devices {gpus} or --device cpu"
            )
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    else:
        # N processes share the machine's cores: without this each would start one thread per core.
        per_process = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", dist.world)))
        torch.set_num_threads(per_process)
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch_dist.init_process_group(backend, rank=dist.rank, world_size=dist.world, timeout=SETUP_TIMEOUT)
    return device


def stop(dist: Distributed) -> None:
    if dist.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def barrier(dist: Distributed) -> None:
    if dist.enabled:
        torch_dist.barrier()


def broadcast(obj, dist: Distributed):
    """Process 0's ``obj`` on every process."""
    if not dist.enabled:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def any_process(flag: bool, dist: Distributed, device: torch.device) -> bool:
    """True on every process when ``flag`` is True on any of them (one tiny all-reduce)."""
    if not dist.enabled:
        return flag
    t = torch.tensor([int(flag)], device=device)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return bool(t.item())


def sum_on_device(values: list[float], dist: Distributed, device: torch.device) -> list[float]:
    """All-reduce (sum) of a few floats through a tensor on ``device`` (what NCCL needs)."""
    if not dist.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch_dist.all_reduce(t)
    return t.tolist()


def wrap(model: nn.Module, dist: Distributed, device: torch.device) -> nn.Module:
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (what checkpoints and validation use)."""
    return getattr(model, "module", model)


class ShardedTask:
    """A task as one process sees it: its share of each epoch's batches; the rest delegated."""

    def __init__(self, task, dist: Distributed) -> None:
        self.task, self.dist = task, dist

    def steps_per_epoch(self) -> int:
        return math.ceil(self.task.steps_per_epoch() / self.dist.world)

    def train_batches(self, epoch: int, skip: int = 0):
        return self.task.train_batches(epoch, skip, shard=(self.dist.rank, self.dist.world))

    def __getattr__(self, name: str):
        return getattr(self.task, name)


def shard_batches(total: int, skip: int, rank: int, world: int) -> list[int]:
    """This process's batch indices of an epoch of ``total`` batches, from round ``skip`` on.

    Round k gives process r batch k x world + r; every process runs ceil(total / world) rounds,
    the last one wrapping to the epoch's first batches when ``total`` does not divide evenly.
    """
    rounds = math.ceil(total / world)
    return [(k * world + rank) % total for k in range(skip, rounds)]


def check_supported(config, dist: Distributed) -> None:
    """Settings whose several-process version is not built yet: a clear error, not a hang."""
    if not dist.enabled:
        return
    if config.time:
        raise ConfigError("--time is not supported with several processes yet: give --epochs")
