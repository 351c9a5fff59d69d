"""Choosing device and precision, making the run directory, the optimizer and the first segment."""

from __future__ import annotations

import copy
import datetime as dt
import os
import platform
from pathlib import Path

import torch
from torch import nn

import lanner
from lanner.config import TrainConfig
from lanner.engine.schedules import Segment
from lanner.errors import ConfigError, WriteError
from lanner.models.weights import backbone_parameters
from lanner.rundir import RunDir

DEFAULT_LR = {"adamw": 1e-3, "adam": 1e-3, "sgd": 0.05}


def now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def new_run_dir(run: str | None, task: str) -> Path:
    """The run's own directory; refuses to mix two runs in one directory."""
    if run is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{task}-{stamp}"
        n = 1
        while path.exists():
            n += 1
            path = Path("runs") / f"{task}-{stamp}-{n}"
    else:
        path = Path(run)
        if RunDir(path).holds_run():  # a failed start (no checkpoint yet) can simply start over
            raise ConfigError(
                f"{path} already holds a run; continue it with `lanner resume {path}` or choose another --run"
            )
    _make_folder(path)
    return path


def _make_folder(path: Path) -> None:
    """``path`` as a folder, or a clear error (it is a file; the parent is read-only or a file)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: is a file, not a run directory; choose another --run")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(f"{path}: cannot make the run directory ({e.strerror or e})") from e


def param_groups(model: nn.Module, weight_decay: float, backbone_lr: float | None = None) -> list[dict]:
    """No weight decay on biases and normalisation weights (1-d tensors), as is standard; with
    ``backbone_lr`` the backbone's groups carry ``lr_scale`` (the trainer multiplies the LR by it)."""
    backbone = {id(p) for p in backbone_parameters(model)} if backbone_lr is not None else set()
    groups: dict[tuple[bool, bool], list] = {}
    for p in model.parameters():
        groups.setdefault((id(p) in backbone, p.ndim > 1), []).append(p)
    out = []
    for (in_backbone, decays), params in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
        group = {"params": params, "weight_decay": weight_decay if decays else 0.0}
        if in_backbone:
            group["lr_scale"] = backbone_lr
        out.append(group)
    return out


def build_optimizer(model: nn.Module, config: TrainConfig, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, config.weight_decay, config.backbone_lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.momentum > 0)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr)


def base_lr(config: TrainConfig) -> float:
    """The configured peak LR; the optimizer's default when none is given, and for previews of
    ``--lr auto`` (training replaces "auto" by the range test's choice before it starts)."""
    return config.lr if isinstance(config.lr, float) else DEFAULT_LR[config.optimizer]


def first_segment(config: TrainConfig, steps_per_epoch: int) -> Segment:
    return Segment(
        index=0,
        start_epoch=0,
        start_step=0,
        end_step=config.epochs * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        base_lr=base_lr(config),
        schedule=copy.deepcopy(config.schedule),
        reason="start",
        time=now(),
    )


def hardware_info(device: torch.device, precision: str) -> dict:
    """What the run ran on, for the report (numbers differ wildly between machines)."""
    info = {
        "device": str(device),
        "precision": precision,
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": default_workers(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lanner": lanner.__version__,
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = torch.cuda.device_count()
    return info
