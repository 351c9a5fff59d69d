"""What every task trained from a shard folder (``lanner shard``) shares: the epoch streamed from the
train shards (:mod:`lanner.data.shard_plan`), the checks a shard folder fails before anything is
built, and the run's data_check.json written from the index (the images themselves are never read
up front). The task-specific parts (labels or boxes, augmentation, metrics) stay in each task."""

from __future__ import annotations

from collections.abc import Iterator

from lanner.config import TrainConfig
from lanner.data.shard_index import ShardIndex, ShardInfo
from lanner.data.shard_plan import EpochPlan, steps_per_process
from lanner.data.shard_stream import ShardStream, StreamBatch, stream_loader
from lanner.errors import ConfigError, DataError

STREAM_WORKERS = 2  # loader workers per process unless --workers says: part of the epoch's order
WINDOW = 1024  # samples shuffled together in a worker: the memory it holds is this many JPEGs


class StreamedEpochs:
    """Mixed into a task (before it) whose training images come from shards: the epoch's size and
    this process's batches. Needs ``source``, ``shards``, ``workers``, ``train_total`` (set by
    :meth:`stream_from`) and the task's ``batch_size`` and ``seed``."""

    source: str
    shards: list[ShardInfo]
    workers: int
    train_total: int
    batch_size: int
    seed: int

    def stream_from(self, index: ShardIndex, source: str, workers: int) -> None:
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

    def streamed_batches(
        self, epoch: int, skip: int = 0, shard: tuple[int, int] = (0, 1)
    ) -> Iterator[tuple[StreamBatch, int]]:
        """This process's batches of ``epoch`` from its step ``skip`` on (the same samples, in the same
        order, as an uninterrupted epoch), each with the number that seeds its augmentation."""
        rank, world = shard
        stream = ShardStream(self.source, self.shards, self.epoch_plan(epoch, shard), skip)
        for expected, batch in enumerate(stream_loader(stream), skip):
            if batch.step != expected:  # the order a resume relies on; never seen, but never silent
                raise RuntimeError(f"shard stream gave step {batch.step} where step {expected} was due")
            # Every process's batches get their own augmentation numbers, as in the cached path.
            yield batch, batch.step * world + rank


def check_usable(index: ShardIndex, config: TrainConfig, task: str) -> None:
    """What a shard folder cannot do for ``task``, said before anything is built."""
    where = config.data
    if index.task != task:
        raise ConfigError(f"{where}: {index.task} shards; train them with --task {index.task} "
                          f"(or write the {task} dataset as shards)")  # fmt: skip
    if not index.count("train"):
        raise DataError(f"{where}: the shards hold no training images")
    if config.image_size not in (None, index.image_size):
        raise ConfigError(f"--image-size {config.image_size}: the shards were written for {index.image_size} "
                          "px; write them again with `lanner shard --image-size`")  # fmt: skip
    if config.classes or config.rename:
        raise ConfigError("--classes/--rename: shards keep the classes they were written with; "
                          "choose classes when writing them")  # fmt: skip


def shard_summary(index: ShardIndex, source: str) -> dict:
    """data_check.json of a run trained from shards: what the index says of the data."""
    counts = index.class_counts.get("train", [])
    present = [c for c in counts if c > 0]
    skipped = index.extra.get("skipped", [])
    return {
        "path": source,
        "format": "lanner-shards",
        "task": index.task,
        "num_images": sum(index.count(s) for s in index.splits),
        "num_classes": len(index.classes),
        "classes": index.classes,
        "images_per_split": {s: index.count(s) for s in index.splits},
        # classification: images per class; detection: boxes per class (what the writer counted)
        "images_per_class" if index.task == "classify" else "boxes_per_class": dict(
            zip(index.classes, counts, strict=False)
        ),
        "imbalance_ratio": round(max(present) / min(present), 2) if present else None,
        "num_issues": len(skipped),
        "issues": [{**s, "action": "skipped", "kind": "unreadable"} for s in skipped],
    }
