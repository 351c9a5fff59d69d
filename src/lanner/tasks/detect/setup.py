"""Everything a detection run needs before the first step.

Mirrors :mod:`lanner.tasks.classify.setup`: read and filter the data, draw or restore the
train/val split, decode the images once into a letterbox cache, build the detector from the
registry. Evaluation rebuilds the same letterboxed pixels for any split or dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from lanner._io import write_json
from lanner._progress import progress_bar
from lanner.config import TrainConfig
from lanner.data.box_transforms import LetterboxCache, build_letterbox_cache
from lanner.data.cache import default_cache_dir
from lanner.data.check import summarise
from lanner.data.classes import select_classes
from lanner.data.formats import read_dataset
from lanner.data.records import Dataset
from lanner.data.split import split_for_run
from lanner.engine.setup import default_workers
from lanner.errors import DataError
from lanner.models.detectors import set_normalization
from lanner.models.registry import create_model
from lanner.models.transfer import Classes
from lanner.rundir import CheckpointMeta, RunDir
from lanner.tasks.base import Prepared, TrainRecipe
from lanner.tasks.data_rules import require_trainable
from lanner.tasks.detect.tiled import build_tiled_task
from lanner.tasks.detect.training import DetectionTask
from lanner.tasks.pretrained import start_from, weights_data_cfg, weights_source

DEFAULT_BATCH = {"cpu": 8, "cuda": 16}
# (model, image size) by device type: FCOS on a ResNet-18 trains at a few images/s on 2 CPU cores.
DEFAULT_MODELS = {"cpu": ("fcos_resnet18", 320), "cuda": ("fcos_resnet50", 640)}


def default_model(device: torch.device) -> tuple[str, int]:
    return DEFAULT_MODELS["cuda" if device.type == "cuda" else "cpu"]


def load_detection_data(config: TrainConfig) -> Dataset:
    dataset = read_dataset(config.data, config.format, allow_outside_root=config.allow_outside_root)
    if dataset.task != "detect":
        raise DataError(
            f"{config.data}: a {dataset.task} dataset ({dataset.format}); --task detect needs boxes"
        )
    return require_trainable(
        select_classes(dataset, config.classes, config.rename),
        config.data,
        min_classes=1,
        learner="a detector",
    )


# ---------------------------------------------------------------------------------------- model
def build_detector(name: str, num_classes: int, image_size: int) -> nn.Module:
    return create_model("detect", name, num_classes=num_classes, image_size=image_size)


def build_detector_from_meta(meta: CheckpointMeta) -> nn.Module:
    model = build_detector(meta.model_name, len(meta.classes), int(meta.get("image_size")))
    if meta.get("normalize"):  # older checkpoints: the builder's (ImageNet) mean/std
        set_normalization(model, meta.get("normalize")["mean"], meta.get("normalize")["std"])
    return model


def weights_normalization(model: nn.Module, weights: dict) -> dict | None:
    """The pretrained backbone's mean/std (timm's pretrained config), set in the detector's transform;
    None when the weights say nothing (the builder's ImageNet statistics stay)."""
    if not weights.get("mean") or not hasattr(model, "transform"):
        return None
    set_normalization(model, weights["mean"], weights["std"])
    return {"mean": list(weights["mean"]), "std": list(weights["std"])}


def cache_dataset(
    dataset: Dataset, image_size: int, cache_dir: str | None, workers: int, console: Console
) -> LetterboxCache:
    """Decode the dataset's images once into a letterbox cache, with a progress bar."""
    with progress_bar("decoding images into cache", len(dataset.records), console) as advance_to:
        cache = build_letterbox_cache(
            [Path(r.path) for r in dataset.records], image_size,
            Path(cache_dir) if cache_dir else default_cache_dir(), workers=workers, progress=advance_to,
        )  # fmt: skip
    for issue in cache.issues:
        console.print(f"[yellow]skipped[/] {issue.path}: {issue.problem}")
    return cache


# ---------------------------------------------------------------------------------------- train
def describe_choices(
    config: TrainConfig,
    dataset: Dataset,
    train_idx: np.ndarray,
    num_val: int,
    split_drawn: bool,
    name: str,
    size: int,
    device: torch.device,
) -> list[str]:
    """What the run is about to train on and with, including the choices lanner made for the user."""
    negatives = sum(1 for i in train_idx if dataset.records[i].num_boxes == 0)
    boxes = sum(dataset.records[i].num_boxes for i in train_idx)
    drawn = f" (val split drawn: {config.val_fraction:.0%}, seed {config.seed}, saved in split.csv)"
    model_default = "" if config.model else f" (default for {device.type})"
    return [
        f"data: {config.data} ({dataset.format}), {len(dataset.classes)} classes, "
        f"{len(train_idx)} train images ({boxes} boxes, {negatives} without boxes, used as negatives) / "
        f"{num_val} val images" + (drawn if split_drawn else ""),
        f"model: {name}{model_default} at {size} px{'' if config.image_size else ' (default)'}"
        + ("" if config.pretrained else ", random init"),
    ]


def prepare_detection(
    config: TrainConfig, run: RunDir, device: torch.device, console: Console, fresh: bool
) -> Prepared:
    dataset = load_detection_data(config)
    made = split_for_run(dataset, run.split, config.val_fraction, config.seed, fresh)
    default_name, default_size = default_model(device)
    name = config.model or default_name
    size = config.image_size or config.tile or default_size
    model = build_detector(name, len(dataset.classes), size)
    source = weights_source(config, model, fresh)  # checked before the images are decoded
    batch = config.batch_size or DEFAULT_BATCH["cuda" if device.type == "cuda" else "cpu"]
    task_kwargs = dict(
        recipe=TrainRecipe.from_config(config, batch),
        score_threshold=config.score_threshold,
        label_offset=getattr(model, "label_offset", 0),
        device=device,
    )
    if config.tile:
        task = build_tiled_task(config, dataset, size, console, **task_kwargs)
        if fresh:
            write_json(run.data_check, summarise(dataset, task.cache.issues))
        train_idx = np.flatnonzero(np.array([r.split == "train" for r in dataset.records]))
        val_idx = np.flatnonzero(np.array([r.split == "val" for r in dataset.records]))
    else:
        cache = cache_dataset(dataset, size, config.cache_dir, config.workers or default_workers(), console)
        if fresh:
            write_json(run.data_check, summarise(dataset, cache.issues))
        splits = np.array([r.split for r in dataset.records], dtype=object)
        train_idx = np.flatnonzero((splits == "train") & cache.ok)
        val_idx = np.flatnonzero((splits == "val") & cache.ok)
        task = DetectionTask(
            cache=cache, dataset=dataset, train_idx=train_idx, val_idx=val_idx, **task_kwargs
        )
    if len(train_idx) == 0:
        raise DataError(f"{config.data}: no readable training images")
    notes = describe_choices(config, dataset, train_idx, len(val_idx), made, name, size, device)
    task.normalize = norm = weights_normalization(model, weights_data_cfg(source, run))
    if norm:
        notes.append(f"inputs normalised as the weights expect: mean {norm['mean']}, std {norm['std']}")
    if source is not None:
        classes = Classes(list(dataset.classes), dict(config.rename), getattr(model, "label_offset", 0))
        start_from(source, model, classes, run, console)
    return Prepared(task, model.to(device), name, batch, notes)
