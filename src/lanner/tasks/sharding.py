"""``lanner shard DATA OUT``: read DATA as training would (any format, the split, the checks), then
write it as streamable shards (:mod:`lanner.data.shard_write`) prepared for one training size."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from lanner._progress import progress_bar
from lanner.data.formats import read_dataset
from lanner.data.pixels import Preprocessing
from lanner.data.records import Dataset, Issue
from lanner.data.shard_index import ShardIndex
from lanner.data.shard_write import DEFAULT_SHARD_SIZE, Pixels, ShardPlan, parse_shard_size, write_shards
from lanner.data.split import assign_validation_split
from lanner.engine.setup import default_workers
from lanner.tasks.classify.setup import default_input_size
from lanner.tasks.data_rules import require_trainable
from lanner.tasks.detect.setup import DEFAULT_MODELS as DETECT_DEFAULTS

CLASSIFY_SIZE = 128  # the CPU default classification size (tasks/classify/setup.py), or the data's own


@dataclass(frozen=True)
class ShardOptions:
    """How ``lanner shard`` reads DATA and writes the shards."""

    image_size: int | None = None  # the training input size (default: the task's CPU default)
    shard_size: str = DEFAULT_SHARD_SIZE  # images per shard (1000) or bytes (64MB)
    val_fraction: float = 0.2  # drawn per class when the data has no val split
    seed: int = 0  # the split and the order the samples are stored in
    format: str | None = None
    workers: int | None = None  # decoding processes (default: one per CPU)
    allow_outside_root: bool = False


def pixels_for(dataset: Dataset, image_size: int | None) -> tuple[int, Pixels]:
    """(training size, stored pixels): classification keeps the cache's larger square for random
    crops (:class:`Preprocessing`'s cache size); detection the letterboxed canvas at the training size."""
    if dataset.task == "detect":
        size = image_size or DETECT_DEFAULTS["cpu"][1]
        return size, Pixels("letterbox", size)
    size = image_size or default_input_size(CLASSIFY_SIZE, dataset)
    return size, Pixels("square", Preprocessing(size, (0.0,) * 3, (1.0,) * 3).cache_size)


def shard_dataset(
    data: str, out: str | Path, options: ShardOptions, console: Console
) -> tuple[ShardIndex, list[Issue]]:
    """Write ``data``'s splits (train and val drawn as a run would; test kept) as shards in ``out``."""
    plan_size = parse_shard_size(options.shard_size)  # a bad size fails before any reading
    dataset = read_dataset(data, options.format, allow_outside_root=options.allow_outside_root)
    learner = "a classifier" if dataset.task == "classify" else "a detector"
    require_trainable(dataset, data, min_classes=2 if dataset.task == "classify" else 1, learner=learner)
    assign_validation_split(dataset, options.val_fraction, options.seed)
    size, pixels = pixels_for(dataset, options.image_size)
    plan = ShardPlan(Path(out), size, pixels, plan_size, options.seed, options.workers or default_workers())
    counter = itertools.count(1)
    with progress_bar("writing shards", len(dataset.records), console) as advance_to:
        index, issues = write_shards(dataset, plan, str(data), lambda: advance_to(next(counter)))
    return index, [*dataset.issues, *issues]
