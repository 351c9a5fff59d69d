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
the same number of steps). Gradients are averaged by DDP. A task that validates in parts
(detection, tiled detection) gives each process a contiguous part of the validation images and
gathers the predictions on process 0, which scores them (the same numbers as one process); other
tasks validate on process 0 alone. Process 0 writes history, plots and checkpoints, and broadcasts
the metrics, so every process takes the same decisions (best epoch, early stopping). With
``--time`` process 0's budget plan and clock are broadcast, and every step all processes agree
whether the budget is spent. A Ctrl-C or SIGTERM seen by any process stops all of them after the
same step, and process 0 saves the resumable checkpoint.

``lanner eval`` and ``lanner predict`` take ``--devices N`` too (and run under torchrun or srun
alike): each process infers on a contiguous :class:`Part` of the images, process 0 gathers every
part's results in the images' order, then scores and writes them alone (see :func:`joined`).

Under SLURM (``srun lanner train ...``, one task per GPU) the process's place comes from
``SLURM_PROCID``, ``SLURM_NTASKS`` and ``SLURM_LOCALID`` when torchrun's variables are absent, and
the rendezvous address from ``MASTER_ADDR`` or else the first host of ``SLURM_NODELIST``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
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


def from_environment(env: dict | None = None) -> Distributed:
    """The process's place in the group: torchrun's variables, else SLURM's (single when neither)."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        rank, local = env.get("RANK", "0"), env.get("LOCAL_RANK", "0")
    else:  # srun sets the step's task count; SLURM_NTASKS is the allocation's
        world = int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")))
        rank, local = env.get("SLURM_PROCID", "0"), env.get("SLURM_LOCALID", "0")
    if world <= 1:
        return SINGLE
    return Distributed(_whole(rank, "rank"), world, _whole(local, "local rank"))


def _whole(text: str, what: str) -> int:
    if not text.strip().isdigit():
        raise ConfigError(f"the {what} in the environment is {text!r}: expected a whole number")
    return int(text)


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[07-09,12],cpu1`` -> ``gpu07``."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if m is None:
        raise ConfigError(f"SLURM_NODELIST {nodelist!r}: cannot read a host name from it")
    name, ranges = m.groups()
    return name if ranges is None else name + ranges.split(",")[0].split("-")[0]


def rendezvous_environment(env: dict | None = None) -> dict[str, str]:
    """MASTER_ADDR and MASTER_PORT for the process group: as given (torchrun sets them), else the
    first SLURM host and a port taken from the job id (every task of a job picks the same)."""
    env = os.environ if env is None else env
    addr = env.get("MASTER_ADDR") or first_host(env.get("SLURM_NODELIST", "127.0.0.1"))
    job = env.get("SLURM_JOB_ID", "")
    port = env.get("MASTER_PORT") or str(15000 + int(job) % 20000 if job.isdigit() else 29500)
    return {"MASTER_ADDR": addr, "MASTER_PORT": port}


def relaunch_under_torchrun(devices: int) -> None:
    """Start ``devices`` copies of the same command with torchrun's own launcher, in this process, and
    exit as they did: 2 when one refused its input (it printed why), 130/143 when interrupted; never
    the launcher's error report and traceback (what ``torchrun`` on the command line would print)."""
    if devices < 1:
        raise ConfigError(f"--devices {devices}: need at least 1")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # "--": the command's own options (--run ...) must not be read as torchrun's (--run-path).
    args = parse_args(["--standalone", f"--nproc-per-node={devices}", "-m", "--", "lanner", *sys.argv[1:]])
    try:
        run(args)  # torchrun's main, less the decorator that prints its error report
    except ChildFailedError as e:
        raise SystemExit(group_exit_code([f.exitcode for f in e.failures.values()])) from None
    except SignalException as e:  # Ctrl-C or a SIGTERM reached the launcher: the processes saved and stopped
        raise SystemExit(128 + int(e.sigval)) from None
    raise SystemExit(0)


# What gloo and NCCL say when the process at the other end of a collective has gone.
_PEER_GONE = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "NCCL communicator was aborted",
)


def is_peer_loss(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and any(s in str(error) for s in _PEER_GONE)


def group_exit_code(codes: list[int]) -> int:
    """One exit code for processes that failed: a refusal of the input (2) first, then an interruption
    (130, 143, or killed by that signal), else 1 (a bug; the processes printed what went wrong)."""
    for wanted in (2, 130, 143):
        if wanted in codes or -(wanted - 128) in codes:
            return wanted
    return 1


def start(dist: Distributed, device: torch.device) -> torch.device:
    """Join the process group; returns this process's device (its own GPU under CUDA)."""
    if not dist.enabled:
        return device
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if gpus == 1:  # SLURM's --gpus-per-task: each process sees its own GPU only
            dist = Distributed(dist.rank, dist.world, 0)
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
    os.environ.update(rendezvous_environment())
    torch_dist.init_process_group(backend, rank=dist.rank, world_size=dist.world, timeout=SETUP_TIMEOUT)
    return device


@contextlib.contextmanager
def joined(device: torch.device):
    """This process in its group (when its environment names one) for the length of the block:
    yields (Distributed, this process's device). What eval and predict run in; training's session
    calls :func:`start` and :func:`stop` itself around a longer life."""
    dist = from_environment()
    device = start(dist, device)
    try:
        yield dist, device
    finally:
        stop(dist)


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
        own = getattr(self.task, "steps_per_process", None)  # a task that splits its epoch itself (shards)
        return own(self.dist.world) if own else math.ceil(self.task.steps_per_epoch() / self.dist.world)

    def train_batches(self, epoch: int, skip: int = 0):
        return self.task.train_batches(epoch, skip, shard=(self.dist.rank, self.dist.world))

    def validate(self, model: nn.Module) -> dict[str, float]:
        """In parts when the task can (``validates_in_parts``): metrics on process 0, {} elsewhere."""
        if self.task.validates_in_parts:
            return self.task.validate(model, Part(self.dist))
        return self.task.validate(model)

    def __getattr__(self, name: str):
        return getattr(self.task, name)


def shard_batches(total: int, skip: int, rank: int, world: int) -> list[int]:
    """This process's batch indices of an epoch of ``total`` batches, from round ``skip`` on.

    Round k gives process r batch k x world + r; every process runs ceil(total / world) rounds,
    the last one wrapping to the epoch's first batches when ``total`` does not divide evenly.
    """
    rounds = math.ceil(total / world)
    return [(k * world + rank) % total for k in range(skip, rounds)]


class Part:
    """One process's contiguous part of a list of work (validation images), and every process's
    results gathered back in the list's order (on process 0, which scores them)."""

    def __init__(self, dist: Distributed = SINGLE) -> None:
        self.dist = dist

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def of(self, items):
        n, rank, world = len(items), self.dist.rank, self.dist.world
        return items[n * rank // world : n * (rank + 1) // world]

    def gather(self, results: list) -> list:
        """Every process's ``results`` concatenated in rank order, on process 0 ([] elsewhere)."""
        if not self.dist.enabled:
            return list(results)
        parts = [None] * self.dist.world if self.dist.is_main else None
        torch_dist.gather_object(list(results), parts, dst=0)
        return [x for part in parts for x in part] if self.dist.is_main else []


WHOLE = Part()


def use_sync_batchnorm(wanted: bool | None, by_default: bool, device: torch.device, world: int) -> bool:
    """``--sync-bn``: BatchNorm statistics over every process's batch. By default (``wanted`` None)
    on where the task says so (detection: small per-GPU batches) on several GPUs; torch runs it on
    GPUs only."""
    check_sync_batchnorm(wanted, device)
    if wanted is None:
        return by_default and device.type == "cuda" and world > 1
    return wanted and world > 1


def check_sync_batchnorm(wanted: bool | None, device: torch.device) -> None:
    if wanted and device.type != "cuda":
        raise ConfigError(
            f"--sync-bn needs GPUs: torch's SyncBatchNorm does not run on {device.type}; "
            "leave it out (each process then keeps its own BatchNorm statistics)"
        )


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """BatchNorm layers replaced by SyncBatchNorm sharing the same parameters and buffers (the
    optimizer and the checkpoint's keys are unchanged)."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
