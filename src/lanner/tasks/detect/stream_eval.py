"""`lanner eval` of a detector on a shard folder: a split of the shards' canvases, read into memory
and scored by the same code as an eval on the dataset itself (mirrors classify/stream_eval.py)."""

from __future__ import annotations

import numpy as np
from rich.console import Console

from lanner.config import InferenceOptions
from lanner.data.records import Dataset
from lanner.data.shard_index import ShardIndex, read_index
from lanner.data.shard_stream import detection_record, read_all
from lanner.errors import ConfigError, DataError
from lanner.eval.detection import detection_thresholds
from lanner.tasks.detect.evaluate import score_detections
from lanner.tasks.detect.stream import held_cache
from lanner.tasks.detect.training import detect_canvases_tta
from lanner.tasks.loading import LoadedRun
from lanner.tasks.run_thresholds import class_thresholds


def evaluate_detection_on_shards(
    loaded: LoadedRun, source: str, split: str | None, options: InferenceOptions, console: Console
) -> dict:
    """COCO metrics of ``loaded`` on one split of the shards (default test, else val)."""
    index = read_index(source)
    _check_matches(loaded, index, source, options)
    split = split or ("test" if "test" in index.splits else "val")
    part = loaded.part
    dataset, canvases, sizes = _read_split(index, source, split)
    mine = part.of(np.arange(len(sizes)))  # --devices N: each process detects on its part
    detections = part.gather(_detect(loaded, canvases[mine], sizes[mine], options.tta))
    if not part.is_main:  # process 0 scores and writes
        return {}
    own = source == loaded.config.data  # thresholds are chosen on the run's own val split only

    def choose_on_val():
        if split == "val":
            return detection_thresholds(dataset, detections)
        val, val_canvases, val_sizes = _read_split(index, source, "val")
        console.print("choosing per-class score thresholds on the val split")
        return detection_thresholds(val, _detect(loaded, val_canvases, val_sizes))

    thresholds = class_thresholds(
        loaded, options.score_threshold, loaded.config.score_threshold, choose_on_val if own else None,
        on_val=own and split == "val",
    )  # fmt: skip
    about = {"split": split, "tiling": None, "tta": options.tta}
    return score_detections(loaded, loaded.run, dataset, detections, thresholds, about, console)


def _detect(loaded: LoadedRun, canvases: np.ndarray, sizes: np.ndarray, tta: bool = False) -> list:
    return detect_canvases_tta(loaded.model, canvases, sizes, loaded.device, tta)


def _read_split(index: ShardIndex, source: str, split: str) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """(the split's records, canvases [N, S, S, 3] uint8, original sizes [N, 2])."""
    if not index.count(split):
        raise DataError(f"{source}: no images in split {split!r} (splits: {sorted(index.splits)})")
    canvases, metas = read_all(source, index.splits[split])
    records = [detection_record(m, split) for m in metas]
    dataset = Dataset(list(index.classes), records, "detect", format="lanner-shards")
    return dataset, canvases, held_cache(canvases, metas).sizes


def _check_matches(loaded: LoadedRun, index: ShardIndex, source: str, options: InferenceOptions) -> None:
    size = int(loaded.meta.get("image_size"))
    if index.task != "detect" or index.classes != loaded.classes or index.stored_size != size:
        raise DataError(f"{source}: {index.task} shards of other classes or another size "
                        f"({index.stored_size} px) than this run's ({size} px)")  # fmt: skip
    if options.tile or loaded.meta.get("tiling"):
        raise ConfigError("--tile: tiled inference needs the full-resolution images and shards hold them "
                          f"shrunk to {index.stored_size} px; evaluate on the dataset itself")  # fmt: skip
