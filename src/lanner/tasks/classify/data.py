"""From a classification dataset on disk to a ready :class:`ClassificationTask` (cache, split, labels)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from lanner._progress import progress_bar
from lanner.config import TrainConfig
from lanner.data.cache import build_cache, default_cache_dir
from lanner.data.pixels import Preprocessing
from lanner.data.records import Dataset, Issue
from lanner.errors import DataError
from lanner.tasks.base import TrainRecipe
from lanner.tasks.classify.training import ClassificationTask


@dataclass
class CachedImages:
    """The decoded cache of a dataset's records plus which of them could be read."""

    images: np.ndarray  # [N, S, S, 3] uint8
    ok: np.ndarray  # [N] bool
    issues: list[Issue]


def cache_records(
    dataset: Dataset, cache_size: int, cache_dir: str | None, workers: int, console: Console
) -> CachedImages:
    paths = [Path(r.path) for r in dataset.records]
    with progress_bar("decoding images into cache", len(paths), console) as advance_to:
        images, ok, issues = build_cache(
            paths, cache_size, Path(cache_dir) if cache_dir else default_cache_dir(), workers=workers,
            progress=advance_to,
        )  # fmt: skip
    for issue in issues:
        console.print(f"[yellow]skipped[/] {issue.path}: {issue.problem}")
    if issues:
        console.print(f"[yellow]{len(issues)} unreadable image(s) skipped[/] (listed in data_check.json)")
    return CachedImages(images, ok, issues)


def build_classification_task(
    config: TrainConfig,
    dataset: Dataset,
    cached: CachedImages,
    prep: Preprocessing,
    batch_size: int,
    device: torch.device,
) -> ClassificationTask:
    labels = np.array([r.label for r in dataset.records], dtype=np.int64)
    splits = np.array([r.split for r in dataset.records], dtype=object)
    train_idx = np.flatnonzero((splits == "train") & cached.ok)
    val_idx = np.flatnonzero((splits == "val") & cached.ok)
    if len(train_idx) == 0:
        raise DataError(f"{config.data}: no readable training images")
    return ClassificationTask(
        images=cached.images,
        labels=labels,
        train_idx=train_idx,
        val_idx=val_idx,
        classes=dataset.classes,
        prep=prep,
        recipe=TrainRecipe.from_config(config, batch_size),
        device=device,
    )
