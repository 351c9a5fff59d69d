"""Everything a classification run needs before the first step, for a new run or a resumed one."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from rich.console import Console

from lanner._io import write_json
from lanner.config import TrainConfig, parse_duration
from lanner.data.check import summarise
from lanner.data.classes import select_classes
from lanner.data.formats import read_dataset
from lanner.data.images import image_size
from lanner.data.pixels import Preprocessing
from lanner.data.records import Dataset
from lanner.data.split import split_for_run
from lanner.engine.distributed import from_environment
from lanner.engine.setup import default_workers
from lanner.errors import DataError
from lanner.models.classifiers import build_classifier
from lanner.models.transfer import Classes
from lanner.rundir import RunDir
from lanner.tasks.base import Prepared
from lanner.tasks.classify.budget_size import (
    MIN_SIZE,
    SIZE_STEP,
    affordable_epochs,
    budget_note,
    range_test_epochs,
    size_for_budget,
    step_seconds,
)
from lanner.tasks.classify.data import build_classification_task, cache_records
from lanner.tasks.classify.training import imbalance_ratio
from lanner.tasks.data_rules import require_trainable
from lanner.tasks.pretrained import start_from, weights_data_cfg, weights_source

DEFAULT_BATCH = 32
# (model, image size) by device type. On a CPU the net that learned the most per minute in lanner's
# budget benchmark (docs/benchmarks.md: resnet10t beat resnet18, regnetx_002 and two mobile nets at
# equal wall-clock time); on a GPU a stronger one.
DEFAULT_MODELS = {"cpu": ("resnet10t", 128), "cuda": ("resnet50", 224)}
SIZE_SAMPLE = 64  # images whose headers are read to learn the data's own resolution


def default_model(device: torch.device) -> tuple[str, int]:
    return DEFAULT_MODELS["cuda" if device.type == "cuda" else "cpu"]


def load_classification_data(config: TrainConfig) -> Dataset:
    dataset = read_dataset(config.data, config.format, allow_outside_root=config.allow_outside_root)
    return require_trainable(
        select_classes(dataset, config.classes, config.rename),
        config.data,
        min_classes=2,
        learner="a classifier",
    )


def prepare_classification(
    config: TrainConfig, run: RunDir, device: torch.device, console: Console, fresh: bool
) -> Prepared:
    dataset = load_classification_data(config)
    made = split_for_run(dataset, run.split, config.val_fraction, config.seed, fresh)
    name, full = _model_choice(config, device, dataset)
    model, mean, std = build_classifier(name, len(dataset.classes))
    source = weights_source(config, model, fresh)
    size, budget_reason = _budget_size(config, model, full, device, dataset, fresh and source is None)
    prep = preprocessing_for(Preprocessing(size, mean, std), weights_data_cfg(source, run), config.image_size)
    cached = cache_records(
        dataset, prep.cache_size, config.cache_dir, config.workers or default_workers(), console
    )
    if fresh:
        write_json(run.data_check, summarise(dataset, cached.issues))
    batch = config.batch_size or DEFAULT_BATCH
    task = build_classification_task(config, dataset, cached, prep, batch, device)
    notes = _describe(config, dataset, task, made, name, prep.image_size, device, budget_reason)
    if source is not None:
        start_from(source, model, Classes(list(dataset.classes), dict(config.rename)), run, console)
    if task.balance != config.balance:  # balance: auto made a choice; say which and why
        ratio = imbalance_ratio(task.class_counts)
        notes.append(f"classes imbalanced {ratio:.1f}:1 (largest/smallest) -> balance {task.balance}")
    # Channels-last: convolutions on CPUs (oneDNN) and GPUs (cuDNN) run faster in NHWC; batches match.
    chosen = size if size != full else None  # measured, so config.yaml keeps it for a resume
    return Prepared(task, model.to(device, memory_format=torch.channels_last), name, batch, notes, chosen)


def preprocessing_for(default: Preprocessing, weights: dict, image_size: int | None) -> Preprocessing:
    """The pretrained weights' mean, std, crop and resize (and input size unless --image-size says)."""
    if not weights:
        return default
    return Preprocessing(
        image_size or weights["input_size"],
        tuple(weights["mean"]),
        tuple(weights["std"]),
        weights["crop_pct"],
        weights["interpolation"],
    )


def _model_choice(config: TrainConfig, device: torch.device, dataset: Dataset) -> tuple[str, int]:
    default_name, default_size = default_model(device)
    return config.model or default_name, config.image_size or default_input_size(default_size, dataset)


def _budget_size(
    config: TrainConfig, model, size: int, device, dataset: Dataset, applies: bool
) -> tuple[int, str]:
    """``--time`` on a CPU, no --image-size, random weights, one process: a size that buys enough
    epochs (tasks/classify/budget_size.py), and the line saying so ("" when the size stays)."""
    if not (applies and config.time and not config.image_size and device.type == "cpu"):
        return size, ""
    if from_environment().enabled:  # each process would time its own steps and might choose another size
        return size, ""
    batch = config.batch_size or DEFAULT_BATCH
    epochs = budget_epochs(config, dataset, batch, step_seconds(model, size, batch, device))
    chosen = size_for_budget(size, epochs)
    return chosen, budget_note(config.time, size, chosen, epochs)


def budget_epochs(config: TrainConfig, dataset: Dataset, batch: int, step_s: float) -> float:
    """Epochs ``--time`` affords at ``step_s`` per step, after ``--lr auto``'s range test."""
    splits = [r.split for r in dataset.records]  # the run's split is drawn (or restored) by now
    val, train = splits.count("val"), sum(s not in ("val", "test") for s in splits)
    epochs = affordable_epochs(parse_duration(config.time), train, val, batch, step_s)
    if config.lr == "auto":
        epochs = max(0.0, epochs - range_test_epochs(math.ceil(train / batch)))
    return epochs


def default_input_size(default: int, dataset: Dataset) -> int:
    """The device's default size, or the images' own resolution when it is lower: upsampling small
    images makes every step dearer and adds no detail."""
    native = typical_short_side(dataset)
    if native is None or native >= default:
        return default
    return max(MIN_SIZE, native // SIZE_STEP * SIZE_STEP)


def typical_short_side(dataset: Dataset) -> int | None:
    """The median shorter side of up to SIZE_SAMPLE images spread over the dataset (headers only)."""
    records = dataset.records
    if not records:
        return None
    step = max(1, len(records) // SIZE_SAMPLE)
    sides = []
    for record in records[::step][:SIZE_SAMPLE]:
        with contextlib.suppress(DataError):  # an unreadable file is reported by the cache, later
            sides.append(min(image_size(record.path)))
    return int(np.median(sides)) if sides else None


def _describe(
    config, dataset: Dataset, task, split_drawn: bool, name: str, size: int, device, budget_reason: str
) -> list[str]:
    drawn = f" (val split drawn: {config.val_fraction:.0%}, seed {config.seed}, saved in split.csv)"
    why = " (for the --time budget: see below)" if budget_reason else _size_reason(config, size, device)
    return [
        f"data: {config.data} ({dataset.format}), {len(dataset.classes)} classes, "
        f"{task.num_train_images} train / {len(task.val_idx)} val images" + (drawn if split_drawn else ""),
        f"model: {name}{'' if config.model else ' (default for ' + device.type + ')'} at {size} px{why}",
        *([budget_reason] if budget_reason else []),
    ]


def _size_reason(config: TrainConfig, size: int, device: torch.device) -> str:
    if config.image_size:
        return ""
    if size < default_model(device)[1]:
        return " (the images' own resolution, below the default)"
    return " (default)"
