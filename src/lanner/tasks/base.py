"""The task plug-in interface and its registry.

A task (classification, detection, ...) is one folder under ``tasks/`` holding a :class:`Task`
subclass and one ``register_task`` call; everything outside ``tasks/`` asks the registry for the
task of a dataset or a checkpoint and calls it, never comparing task names itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from lanner.config import InferenceOptions, TrainConfig
from lanner.errors import ConfigError
from lanner.rundir import CheckpointMeta, RunDir

# `--augment auto` below this many planned epochs: the light preset. A short run underfits, and a crop
# of 35% of the image can cut away what makes its class (the fingers of a hand sign). Light won on both
# real sets at every length measured, 3 to 15 epochs (docs/benchmarks.md, "Augmentation strength and
# the run's length"); the default's stronger crop is kept for long runs, where it is the usual practice.
SHORT_RUN_EPOCHS = 30


def auto_augment(planned_epochs: int) -> str:
    """The preset ``--augment auto`` stands for in a run of ``planned_epochs`` (classification)."""
    return "light" if planned_epochs < SHORT_RUN_EPOCHS else "default"


@dataclass(frozen=True)
class TrainRecipe:
    """How a task's training batches are drawn and scored: batch size, augmentation, class balance,
    loss smoothing, and the seed every epoch's order and every batch's augmentation derive from."""

    batch_size: int
    augment: str = "auto"  # a preset of the task's training module, or auto (see auto_augment)
    hflip: bool = True
    balance: str = "auto"  # classification: auto, none, oversample, weighted, logit_adjust
    label_smoothing: float = 0.0
    min_visibility: float = 0.5  # detection: a box less visible than this after a crop is dropped
    seed: int = 0
    mixup: float = 0.0  # classification: Beta(alpha, alpha) of mixup / cutmix; 0 = off
    cutmix: float = 0.0
    eval_train: int | None = None  # training images scored each epoch (None: as many as val)
    geometry: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # rotate, shear, translate, scale
    progressive: float = 0.0  # classification: the first epoch's input size as a fraction of the full one
    erase: float = 0.0  # classification: share of training images given a random-erasing rectangle

    @classmethod
    def from_config(cls, config: TrainConfig, batch_size: int) -> TrainRecipe:
        return cls(
            batch_size, config.augment.name, config.hflip, config.balance, config.label_smoothing,
            config.min_visibility, config.seed, config.mixup, config.cutmix, config.eval_train,
            config.augment.geometry(), config.progressive, config.erase,
        )  # fmt: skip

    def train_eval_sample(self, train_idx: np.ndarray, num_val: int) -> np.ndarray:
        """The training images scored every epoch beside val: a fixed seeded sample (sorted), as many
        as ``eval_train`` (default: as many as val), never more than there are."""
        wanted = num_val if self.eval_train is None else self.eval_train
        count = min(wanted, len(train_idx))
        rng = np.random.default_rng(self.seed + 7919)  # its own stream: the epoch order is untouched
        return (
            np.sort(rng.choice(np.asarray(train_idx), count, replace=False)) if count > 0 else train_idx[:0]
        )


@dataclass
class Prepared:
    """A task's training side ready for the trainer, with its model and the notes to print."""

    task: Any  # an engine.trainer.TrainTask
    model: nn.Module
    model_name: str
    batch_size: int
    notes: list[str] = field(default_factory=list)
    # An input size lanner measured its way to (--time): config.yaml keeps it, as a resume cannot re-measure.
    image_size: int | None = None


@dataclass
class ExportPlan:
    """What ``lanner export`` turns into an ONNX file: a module taking pixels in 0..1, a sample input,
    the names of its outputs, options for ``torch.onnx.export`` and what the JSON spec says."""

    module: nn.Module
    sample: torch.Tensor
    outputs: list[str]
    onnx_options: dict
    spec: dict


class Task(ABC):
    """What lanner asks of a task; one instance per task, registered by ``name``."""

    name: str
    monitor: str  # the metric that picks the best checkpoint by default

    @abstractmethod
    def prepare(
        self, config: TrainConfig, run: RunDir, device: torch.device, console: Console, fresh: bool
    ) -> Prepared:
        """Read and cache the training data, build the model: everything before the first step."""

    @abstractmethod
    def build_model(self, meta: CheckpointMeta) -> nn.Module:
        """The freshly initialised architecture a checkpoint's weights load into."""

    @abstractmethod
    def evaluate(self, loaded, data: str | None, split: str | None, options: InferenceOptions,
                 console: Console) -> dict:  # fmt: skip
        """Metrics of a loaded run (``tasks.loading.LoadedRun``) on a split; writes RUN/eval, metrics.json."""

    @abstractmethod
    def predict(self, loaded, inputs: list[str], out: Path | None, options: InferenceOptions,
                console: Console) -> list[dict]:  # fmt: skip
        """Predictions for files, folders and globs, written under ``out`` (default RUN/predictions)."""

    def predict_images(self, loaded, images: list, options: InferenceOptions) -> list:
        """Typed results (``lanner.predict.results``) for upright RGB PIL images in memory."""
        raise ConfigError(f"task {self.name!r} cannot predict on images in memory")

    @abstractmethod
    def export_plan(self, loaded) -> ExportPlan:
        """How ``lanner export`` writes this task's models as ONNX."""

    # Several runs as one model (tasks/ensemble.py): ``ensemble`` is a ``tasks.ensemble.Ensemble``.
    def evaluate_ensemble(self, ensemble, data: str | None, split: str | None, options: InferenceOptions,
                          console: Console) -> dict:  # fmt: skip
        """Metrics of the combined runs, beside each member's headline metric; writes RUN1/ensemble."""
        raise ConfigError(f"{self.name} runs cannot be combined into an ensemble")

    def predict_ensemble(self, ensemble, inputs: list[str], out: Path | None, options: InferenceOptions,
                         console: Console) -> list[dict]:  # fmt: skip
        """The combined runs' predictions, written under ``out`` (default RUN1/ensemble/predictions)."""
        raise ConfigError(f"{self.name} runs cannot be combined into an ensemble")

    # `lanner review` (tasks/review.py): what a task's out-of-sample predictions and label rules are.
    def reviewer(self):
        """The task's reviewer: ``format``/``columns``, ``training_data(config)``,
        ``predict(loaded, dataset, classes, console)`` and ``issues(dataset, predictions)``."""
        raise ConfigError(f"`lanner review` cannot review {self.name} runs")

    # `lanner models NAME` / `lanner models RUN`: an untrained model of a name, one input of a model.
    def summary_model(self, name: str, image_size: int | None) -> tuple[nn.Module, Any]:
        """A freshly initialised model called ``name`` and one input for it at ``image_size``."""
        raise ConfigError(f"`lanner models` cannot summarise {self.name} models")

    def summary_input(self, meta: CheckpointMeta, image_size: int | None) -> Any:
        """One input of a trained model at ``image_size`` (default: the size it was trained at)."""
        raise ConfigError(f"`lanner models` cannot summarise {self.name} runs")

    # The report's gallery (eval/predictions.json entries): which fields it shows, how bad an image
    # is (worst shown first) and which classes it holds (every class gets its share of the gallery).
    gallery_keys: tuple[str, ...] = ()

    @abstractmethod
    def gallery_prepare(self, item: dict, threshold: float) -> None:
        """Add ``badness`` (a sort key, bigger = worse) and any task-specific fields to ``item``."""

    @abstractmethod
    def gallery_classes(self, item: dict) -> set:
        """The class indices a gallery item shows."""


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Make ``task`` known by its name; registering a name twice raises."""
    if task.name in _TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r}; lanner knows: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def task_names() -> list[str]:
    return sorted(_TASKS)
