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
from lanner.data.shard_plan import EpochPlan, steps_per_process
from lanner.data.shard_stream import ShardStream, read_all, stream_loader
from lanner.errors import ConfigError
from lanner.tasks.base import TrainRecipe
from lanner.tasks.classify.training import ClassificationTask

STREAM_WORKERS = 2  # loader workers per process unless --workers says: part of the epoch's order
WINDOW = 1024  # samples shuffled together in a worker: the memory it holds is this many JPEGs


class StreamedClassificationTask(ClassificationTask):
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
        self.source, self.shards, self.workers = source, index.splits["train"], workers
        self.train_total = index.count("train")

    @property
    def num_train_images(self) -> int:
        return self.train_total

    def steps_per_process(self, world: int) -> int:
        """Steps of each of ``world`` processes in an epoch (they split the epoch themselves)."""
        return steps_per_process(self.train_total, self.batch_size, world)

    def steps_per_epoch(self) -> int:
        return self.steps_per_process(1)

    def epoch_plan(self, epoch: int, shard: tuple[int, int] = (0, 1)) -> EpochPlan:
        counts = tuple(s.count for s in self.shards)
        rank, world = shard
        return EpochPlan(counts, self.seed, epoch, self.batch_size, rank, world, self.workers, WINDOW)

    def train_batches(self, epoch: int, skip: int = 0, shard: tuple[int, int] = (0, 1)):
        """This process's batches of ``epoch`` from its step ``skip`` on (the same samples, in the same
        order and with the same augmentation, as an uninterrupted epoch)."""
        plan = self.epoch_plan(epoch, shard)
        rank, world = shard
        for expected, batch in enumerate(
            stream_loader(ShardStream(self.source, self.shards, plan, skip)), skip
        ):
            if batch.step != expected:  # the order a resume relies on; never seen, but never silent
                raise RuntimeError(f"shard stream gave step {batch.step} where step {expected} was due")
            labels = torch.as_tensor([m["label"] for m in batch.annotations], dtype=torch.long)
            # Every process's batches get their own augmentation numbers, as in the cached path.
            yield self.training_batch(batch.images, labels, epoch, batch.step * world + rank)


def held_images(index: ShardIndex, source: str, recipe: TrainRecipe) -> tuple[np.ndarray, np.ndarray, int]:
    """The images kept in memory for validation: every val sample, then the training sample scored
    beside them. Returns (images [N, S, S, 3] uint8, labels [N], how many are val)."""
    val_images, val_meta = read_all(source, index.splits.get("val", []))
    wanted = len(val_meta) if recipe.eval_train is None else recipe.eval_train
    train_images, train_meta = read_all(source, index.splits["train"], limit=wanted)
    side = index.stored_size
    images = np.concatenate(
        [np.zeros((0, side, side, 3), np.uint8), *(a for a in (val_images, train_images) if len(a))]
    )
    labels = np.array([m["label"] for m in (*val_meta, *train_meta)], dtype=np.int64)
    return images, labels, len(val_meta)
