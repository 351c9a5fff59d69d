"""Rebuild a trained model from a run: its task, classes, architecture and preprocessing come from the
checkpoint (:class:`~lanner.rundir.CheckpointMeta`), the architecture from the task's plug-in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lanner.config import TrainConfig, make_config
from lanner.engine.checkpoint import find_checkpoint, load_checkpoint
from lanner.engine.distributed import WHOLE, Part
from lanner.models.inference import inference_model, resolve_inference
from lanner.rundir import CheckpointMeta, RunDir
from lanner.tasks.base import Task, get_task


@dataclass
class LoadedRun:
    model: nn.Module  # in eval mode, on the requested device
    meta: CheckpointMeta
    config: TrainConfig
    checkpoint: Path
    device: torch.device = torch.device("cpu")
    precision: str = "32"  # autocast for inference: 32, bf16 or 16-mixed
    # This process's share of eval's and predict's images (all of them unless several processes run);
    # with several, process 0 gets every share's results back and does the scoring and writing.
    part: Part = WHOLE

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def run(self) -> RunDir:
        return RunDir.of_checkpoint(self.checkpoint)

    @property
    def task(self) -> Task:
        return get_task(self.meta.task)


def load_run(run: str | Path, which: str = "best", device: torch.device | str = "cpu") -> LoadedRun:
    path = find_checkpoint(run, which)
    ckpt = load_checkpoint(path)
    meta = CheckpointMeta.from_checkpoint(ckpt, str(path))
    model = get_task(meta.task).build_model(meta)
    model.load_state_dict(ckpt["state_dict"])
    config = make_config(meta.config, str(path))
    return LoadedRun(model.to(device).eval(), meta, config, path, torch.device(device))


def describe_inference(loaded: LoadedRun) -> str:
    """The line eval and predict print first: where and how the model runs."""
    return (
        f"inference on {loaded.device}, precision {loaded.precision} "
        "(BatchNorm folded into convolutions, channels-last)"
    )


def load_for_inference(
    run: str | Path, device: str = "auto", precision: str = "auto", which: str = "best", part: Part = WHOLE
) -> LoadedRun:
    """``load_run`` on the chosen device, its model made fast for eval/predict (see models.inference).

    ``device``: auto (CUDA when available), cpu, cuda, cuda:N; ``precision``: auto (bf16 on a GPU
    that has it, else float16 autocast; float32 on a CPU), 32, bf16, 16-mixed. ``part``: this
    process's share of the images (``lanner eval/predict --devices N``).
    """
    chosen, precision = resolve_inference(device, precision)
    loaded = load_run(run, which, chosen)
    loaded.model = inference_model(loaded.model, chosen, precision, inplace=True)
    loaded.precision, loaded.part = precision, part
    return loaded
