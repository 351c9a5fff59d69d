"""Reading shards: samples of a tar shard in order, and an epoch's batches as a torch IterableDataset.

A shard is opened through ``fsspec.open`` (a local path or any URL fsspec knows) and read with the
standard library's ``tarfile``; samples the epoch does not need are passed over by their tar
headers, their pixels never decoded. JPEGs are decoded only when their batch is put together, in
the loader worker, so what a worker holds is one shuffle window of compressed samples.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lanner.data.records import ImageRecord
from lanner.data.shard_index import ShardInfo, join
from lanner.data.shard_plan import EpochPlan, Span, skipped_batches, spans, window_permutation, worker_shares
from lanner.errors import DataError

Sample = tuple[bytes, dict]  # (JPEG bytes, the sample's annotation)


def read_span(source: str, shard: ShardInfo, start: int, stop: int) -> Iterator[Sample]:
    """Samples [start, stop) of one shard, in their stored order."""
    where = join(source, shard.name)
    try:
        with fsspec.open(where, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            yield from _samples(tar, where, start, stop)
    except (OSError, tarfile.TarError) as e:
        raise DataError(f"{where}: cannot read the shard ({type(e).__name__}: {e})") from e


def _samples(tar: tarfile.TarFile, where: str, start: int, stop: int) -> Iterator[Sample]:
    """Pairs of KEY.jpg + KEY.json members; members before ``start`` are skipped unread."""
    index, pixels = 0, None
    for member in tar:
        if index >= stop:
            return
        key, _, ext = member.name.rpartition(".")
        if ext == "jpg":
            pixels = (key, tar.extractfile(member).read()) if index >= start else (key, b"")
        elif ext == "json":
            if pixels is None or pixels[0] != key:
                raise DataError(f"{where}: {member.name} has no {key}.jpg before it")
            if index >= start:
                yield pixels[1], json.loads(tar.extractfile(member).read())
            index, pixels = index + 1, None
    if index < stop:
        raise DataError(f"{where}: holds {index} samples, the index says at least {stop}")


def read_spans(source: str, shards: list[ShardInfo], parts: list[Span]) -> Iterator[Sample]:
    for part in parts:
        yield from read_span(source, shards[part.shard], part.start, part.stop)


def decode(jpegs: list[bytes]) -> np.ndarray:
    """JPEG bytes of equal-sized squares -> [B, S, S, 3] uint8."""
    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.uint8) for b in jpegs])


def read_all(source: str, shards: list[ShardInfo], limit: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """The first ``limit`` samples (all by default) of a shard set in memory: ([N, S, S, 3], annotations)."""
    total = sum(s.count for s in shards)
    n = total if limit is None else min(limit, total)
    jpegs, metas = [], []
    for shard_number, shard in enumerate(shards):
        if len(metas) >= n:
            break
        for jpeg, meta in read_spans(
            source, shards, [Span(shard_number, 0, min(shard.count, n - len(metas)))]
        ):
            jpegs.append(jpeg)
            metas.append(meta)
    return (decode(jpegs) if jpegs else np.zeros((0, 1, 1, 3), np.uint8)), metas


def read_held(
    source: str, val: list[ShardInfo], train: list[ShardInfo], train_count: int | None, side: int
) -> tuple[np.ndarray, list[dict], int]:
    """What a streamed run validates on, in memory: every val sample, then the first ``train_count``
    training samples (None: as many as val; the writer shuffled them, so the first are a sample).
    Returns (images [N, side, side, 3] uint8, annotations, how many of them are val)."""
    val_images, val_meta = read_all(source, val)
    wanted = len(val_meta) if train_count is None else train_count
    train_images, train_meta = read_all(source, train, limit=wanted)
    images = np.concatenate(
        [np.zeros((0, side, side, 3), np.uint8), *(a for a in (val_images, train_images) if len(a))]
    )
    return images, [*val_meta, *train_meta], len(val_meta)


def detection_record(meta: dict, split: str | None = None) -> ImageRecord:
    """A detection sample's annotation (see ``shard_write.sample_json``) as the record it was written
    from: boxes back in the original image's pixels, which is where metrics compare them."""
    scale = float(meta["scale"])
    return ImageRecord(
        Path(meta["source"]), int(meta["width"]), int(meta["height"]),
        boxes=np.asarray(meta["boxes"], dtype=np.float32).reshape(-1, 4) / scale,
        labels=np.asarray(meta["labels"], dtype=np.int64),
        iscrowd=np.asarray(meta["iscrowd"], dtype=bool),
        ignore=np.asarray(meta["ignore"], dtype=np.float32).reshape(-1, 4) / scale,
        split=split,
    )  # fmt: skip


@dataclass
class StreamBatch:
    """One training batch as a loader worker hands it over."""

    images: np.ndarray  # [B, S, S, 3] uint8
    annotations: list[dict]
    step: int  # the process's batch number in the epoch (seeds its augmentation)


def worker_batches(
    source: str, shards: list[ShardInfo], plan: EpochPlan, worker: int, skip: int
) -> Iterator[StreamBatch]:
    """Worker ``worker``'s batches of ``plan`` that come at or after the process's step ``skip``."""
    share = worker_shares(plan)[worker]
    done = skipped_batches(skip, worker, plan.workers)
    offset = sum(share.sizes[:done])  # the worker's first output sample to produce
    first_window = offset // plan.window
    pending: list[Sample] = []
    batch = done
    for w in range(first_window, math.ceil(share.count / plan.window)):
        lo, hi = w * plan.window, min((w + 1) * plan.window, share.count)
        window = list(read_spans(source, shards, spans(plan, share.start + lo, share.start + hi)))
        order = window_permutation(plan, worker, w, len(window))
        pending.extend(window[i] for i in order[max(offset - lo, 0) :])
        while batch < len(share.sizes) and len(pending) >= share.sizes[batch]:
            taken, pending = pending[: share.sizes[batch]], pending[share.sizes[batch] :]
            yield StreamBatch(decode([j for j, _ in taken]), [m for _, m in taken], share.batches[batch])
            batch += 1


class ShardStream(IterableDataset):
    """One process's batches of one epoch; each loader worker produces its share (see shard_plan)."""

    def __init__(self, source: str, shards: list[ShardInfo], plan: EpochPlan, skip: int = 0) -> None:
        self.source, self.shards, self.plan, self.skip = source, shards, plan, skip

    def __iter__(self) -> Iterator[StreamBatch]:
        info = get_worker_info()
        # The DataLoader asks its workers in turn from worker 0, so worker 0 plays the part that
        # makes the next step: a resumed epoch's first batch is step ``skip``, not step 0's round.
        part = ((info.id if info is not None else 0) + self.skip) % self.plan.workers
        return worker_batches(self.source, self.shards, self.plan, part, self.skip)


def stream_loader(stream: ShardStream) -> DataLoader:
    """The workers of ``stream`` in torch's DataLoader: batches come back in the process's order."""
    return DataLoader(
        stream, batch_size=None, num_workers=stream.plan.workers, collate_fn=_as_is, prefetch_factor=2,
        multiprocessing_context=_context(),
    )  # fmt: skip


def _as_is(batch: StreamBatch) -> StreamBatch:
    return batch


def _context():
    # fork starts a worker in milliseconds (spawn re-imports torch, seconds per epoch); the default
    # start method elsewhere than Linux is kept.
    return "fork" if "fork" in torch.multiprocessing.get_all_start_methods() else None
