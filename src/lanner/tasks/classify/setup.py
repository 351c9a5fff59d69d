"""Everything a classification run needs before the first step, for a new run or a resumed one."""

from __future__ import annotations

import torch
from rich.console import Console

from lanner._io import write_json
from lanner.config import TrainConfig
from lanner.data.check import summarise
from lanner.data.classes import select_classes
from lanner.data.formats import read_dataset
from lanner.data.pixels import Preprocessing
from lanner.data.records import Dataset
from lanner.data.split import split_for_run
from lanner.engine.setup import default_workers
from lanner.models.classifiers import build_classifier
from lanner.models.transfer import Classes
from lanner.rundir import RunDir
from lanner.tasks.base import Prepared
from lanner.tasks.classify.data import build_classification_task, cache_records
from lanner.tasks.classify.training import imbalance_ratio
from lanner.tasks.data_rules import require_trainable
from lanner.tasks.pretrained import start_from, weights_data_cfg, weights_source

DEFAULT_BATCH = 32
# (model, image size) by device type: small and fast on a CPU, stronger on a GPU.
DEFAULT_MODELS = {"cpu": ("resnet18", 128), "cuda": ("resnet50", 224)}


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
    name, size = _model_choice(config, device)
    model, mean, std = build_classifier(name, len(dataset.classes))
    source = weights_source(config, model, fresh)
    prep = preprocessing_for(Preprocessing(size, mean, std), weights_data_cfg(source, run), config.image_size)
    cached = cache_records(
        dataset, prep.cache_size, config.cache_dir, config.workers or default_workers(), console
    )
    if fresh:
        write_json(run.data_check, summarise(dataset, cached.issues))
    batch = config.batch_size or DEFAULT_BATCH
    task = build_classification_task(config, dataset, cached, prep, batch, device)
    notes = _describe(config, dataset, task, made, name, prep.image_size, device)
    if source is not None:
        start_from(source, model, Classes(list(dataset.classes), dict(config.rename)), run, console)
    if task.balance != config.balance:  # balance: auto made a choice; say which and why
        ratio = imbalance_ratio(task.class_counts)
        notes.append(f"classes imbalanced {ratio:.1f}:1 (largest/smallest) -> balance {task.balance}")
    # Channels-last: convolutions on CPUs (oneDNN) and GPUs (cuDNN) run faster in NHWC; batches match.
    return Prepared(task, model.to(device, memory_format=torch.channels_last), name, batch, notes)


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


def _model_choice(config: TrainConfig, device: torch.device) -> tuple[str, int]:
    default_name, default_size = default_model(device)
    return config.model or default_name, config.image_size or default_size


def _describe(config, dataset: Dataset, task, split_drawn: bool, name: str, size: int, device) -> list[str]:
    drawn = f" (val split drawn: {config.val_fraction:.0%}, seed {config.seed}, saved in split.csv)"
    return [
        f"data: {config.data} ({dataset.format}), {len(dataset.classes)} classes, "
        f"{task.num_train_images} train / {len(task.val_idx)} val images" + (drawn if split_drawn else ""),
        f"model: {name}{'' if config.model else ' (default for ' + device.type + ')'} at {size} px"
        f"{'' if config.image_size else ' (default)'}",
    ]
