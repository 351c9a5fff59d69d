"""Detection trained from a shard folder (``lanner shard``): batches streamed, never cached.

Mirrors :mod:`lanner.tasks.classify.stream`. The shards hold the letterboxed canvases the cache
would (at the training size) with the boxes already on them, so a streamed batch goes through the
cached path's own augmentation (boxes follow the pixels). Validation is small: the val shards, and
as many training samples as ``--eval-train`` asks, are held in memory as a letterbox cache of their
own, with their records (boxes back in original pixels), so validation loss, mAP and the best
checkpoint are the cached path's code unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from lanner.data.box_transforms import BoxTargets, LetterboxCache, scaled_targets
from lanner.data.records import Dataset
from lanner.data.shard_index import ShardIndex
from lanner.data.shard_stream import detection_record, read_held
from lanner.tasks.base import TrainRecipe
from lanner.tasks.detect.training import DetectionTask
from lanner.tasks.streaming import STREAM_WORKERS, StreamedEpochs


class StreamedDetectionTask(StreamedEpochs, DetectionTask):
    """:class:`DetectionTask` whose training batches are streamed from shards."""

    def __init__(
        self, *, index: ShardIndex, source: str, recipe: TrainRecipe, score_threshold: float = 0.25,
        label_offset: int = 0, device: torch.device | None = None, workers: int = STREAM_WORKERS,
    ) -> None:  # fmt: skip
        cache, dataset, val_count = held_canvases(index, source, recipe)
        held = np.arange(len(dataset.records))
        super().__init__(
            cache=cache, dataset=dataset, train_idx=held[val_count:], val_idx=held[:val_count],
            recipe=recipe, score_threshold=score_threshold, label_offset=label_offset, device=device,
        )  # fmt: skip
        self.stream_from(index, source, workers)

    def train_batches(self, epoch: int, skip: int = 0, shard: tuple[int, int] = (0, 1)):
        """This process's batches of ``epoch`` from its step ``skip`` on (the same samples, in the same
        order and with the same augmentation, as an uninterrupted epoch)."""
        for batch, number in self.streamed_batches(epoch, skip, shard):
            targets = [canvas_targets(m) for m in batch.annotations]
            yield self.training_batch(batch.images, targets, epoch, number)


def canvas_targets(meta: dict) -> BoxTargets:
    """A sample's boxes as stored (already on its canvas), crowd boxes left out as the cache's are."""
    boxes = np.asarray(meta["boxes"], dtype=np.float32).reshape(-1, 4)
    return scaled_targets(boxes, np.asarray(meta["labels"], dtype=np.int64), np.asarray(meta["iscrowd"]), 1.0)


def held_canvases(index: ShardIndex, source: str, recipe: TrainRecipe) -> tuple[LetterboxCache, Dataset, int]:
    """The canvases kept in memory for validation (every val sample, then the training samples
    scored beside them) as a letterbox cache and its records; and how many are val."""
    images, metas, val_count = read_held(
        source, index.splits.get("val", []), index.splits["train"], recipe.eval_train, index.stored_size
    )
    return held_cache(images, metas), held_dataset(index, metas, val_count), val_count


def held_cache(images: np.ndarray, metas: list[dict]) -> LetterboxCache:
    """Canvases read from shards as a :class:`LetterboxCache` (every one readable: the writer skipped
    the others)."""
    sizes = np.array([[m["width"], m["height"]] for m in metas], dtype=np.int64).reshape(-1, 2)
    return LetterboxCache(images, sizes, [])


def held_dataset(index: ShardIndex, metas: list[dict], val_count: int) -> Dataset:
    records = [detection_record(m, "val" if i < val_count else "train") for i, m in enumerate(metas)]
    return Dataset(list(index.classes), records, "detect", format="lanner-shards")
