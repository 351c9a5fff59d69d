"""Classification trained from a shard folder (``lanner shard``): batches streamed, never cached.

The training batches come from :class:`lanner.data.shard_stream.ShardStream` (each process and
loader worker reads its own shards, see :mod:`lanner.data.shard_plan`) and are augmented exactly as
the cached path's. Validation is small: the val shards, and as many training samples as
``--eval-train`` asks (the first ones stored: the writer shuffled them), are held in memory, so
everything after the training batches (metrics, best checkpoint) is the cached path's own code.
"""

from __future__ import annotations

import numpy as np
import torch

from lanner.data.pixels import Preprocessing
from lanner.data.shard_index import ShardIndex
from lanner.data.shard_stream import read_held
from lanner.errors import ConfigError
from lanner.tasks.base import TrainRecipe
from lanner.tasks.classify.training import ClassificationTask
from lanner.tasks.streaming import STREAM_WORKERS, StreamedEpochs


class StreamedClassificationTask(StreamedEpochs, ClassificationTask):
    """:class:`ClassificationTask` whose training batches are streamed from shards."""

    def __init__(
        self, *, index: ShardIndex, source: str, prep: Preprocessing, recipe: TrainRecipe,
        device: torch.device, workers: int = STREAM_WORKERS,
    ) -> None:  # fmt: skip
        images, labels, val_count = held_images(index, source, recipe)
        held = np.arange(len(labels))
        super().__init__(
            images=images, labels=labels, train_idx=held[val_count:], val_idx=held[:val_count],
            classes=index.classes, prep=prep, recipe=recipe, device=device,
        )  # fmt: skip
        if recipe.balance == "oversample":
            raise ConfigError("--balance oversample needs random access to the images; shards are "
                              "streamed: use weighted, logit_adjust or none")  # fmt: skip
        counts = np.asarray(index.class_counts.get("train", [0] * len(index.classes)), dtype=np.float64)
        self.set_class_counts(counts, recipe.balance, recipe.label_smoothing)
        self.stream_from(index, source, workers)

    def train_batches(self, epoch: int, skip: int = 0, shard: tuple[int, int] = (0, 1)):
        """This process's batches of ``epoch`` from its step ``skip`` on (the same samples, in the same
        order and with the same augmentation, as an uninterrupted epoch)."""
        for batch, number in self.streamed_batches(epoch, skip, shard):
            labels = torch.as_tensor([m["label"] for m in batch.annotations], dtype=torch.long)
            yield self.training_batch(batch.images, labels, epoch, number)


def held_images(index: ShardIndex, source: str, recipe: TrainRecipe) -> tuple[np.ndarray, np.ndarray, int]:
    """The images kept in memory for validation: every val sample, then the training sample scored
    beside them. Returns (images [N, S, S, 3] uint8, labels [N], how many are val)."""
    images, metas, val_count = read_held(
        source, index.splits.get("val", []), index.splits["train"], recipe.eval_train, index.stored_size
    )
    return images, np.array([m["label"] for m in metas], dtype=np.int64), val_count
