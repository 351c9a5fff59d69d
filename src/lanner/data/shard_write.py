"""``lanner shard DATA OUT``: a dataset of any format as tar shards of pre-resized JPEGs.

Each split gets its own shard set (``OUT/train/shard-000000.tar``, ``OUT/val/...``), in the
WebDataset layout: ``KEY.jpg`` (the pixels the training cache would hold) and ``KEY.json`` (label,
or boxes in the stored pixels' coordinates, and the source file). The samples of a split are
shuffled once, with the seed, before writing: class folders come sorted, and a stream only mixes
within a bounded window, so a shard of one class would make batches of one class.

Written with the standard library's ``tarfile`` rather than the ``webdataset`` package: no new
dependency, and the reader controls the exact sample it resumes at. Every shard is written under a
temp name and renamed when complete; the index (``lanner-shards.json``) is written last, so a
killed ``lanner shard`` leaves no folder that looks complete.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

import lanner
from lanner._io import atomic_path, write_json
from lanner.data.box_transforms import letterbox_scale, load_letterboxed
from lanner.data.cache import preprocess_with_size
from lanner.data.records import Dataset, ImageRecord, Issue
from lanner.data.shard_index import INDEX_NAME, ShardIndex, ShardInfo
from lanner.errors import ConfigError, DataError

JPEG_QUALITY = 95  # pre-resized pixels: small files, and close to what the uint8 cache holds
DEFAULT_SHARD_SIZE = "1000"


@dataclass(frozen=True)
class ShardSize:
    """When a shard is full: after ``images`` samples or ``bytes`` of payload, whichever comes first."""

    images: int | None = None
    bytes: int | None = None

    def full(self, count: int, size: int) -> bool:
        return (self.images is not None and count >= self.images) or (
            self.bytes is not None and size >= self.bytes
        )


_UNITS = {"": None, "kb": 1e3, "mb": 1e6, "gb": 1e9}


def parse_shard_size(text: str) -> ShardSize:
    """``1000`` (images per shard) or ``64MB`` / ``1GB`` (bytes per shard)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(|kb|mb|gb)\s*", str(text).lower())
    if m is None or float(m.group(1)) <= 0:
        raise ConfigError(f"--shard-size {text!r}: give images per shard (1000) or a size (64MB, 1GB)")
    unit = _UNITS[m.group(2)]
    if unit is None:
        return ShardSize(images=int(float(m.group(1))))
    return ShardSize(bytes=int(float(m.group(1)) * unit))


@dataclass(frozen=True)
class Pixels:
    """How every image is pre-resized: ``square`` (classification: shorter side, centre crop, as the
    cache) or ``letterbox`` (detection: longer side, padded, boxes scaled alike)."""

    kind: str
    side: int


def _encode(args: tuple[str, str, int]) -> tuple[bytes | None, tuple[int, int], str | None]:
    """One file -> (JPEG bytes of the stored pixels, original upright (width, height), error)."""
    path, kind, side = args
    try:
        if kind == "square":
            pixels, original = preprocess_with_size(path, side)
        else:
            pixels, original = load_letterboxed(path, side)
    except DataError as e:
        return None, (0, 0), str(e)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue(), original, None


def sample_json(record: ImageRecord, original: tuple[int, int], pixels: Pixels, root: Path | None) -> dict:
    """The annotation stored beside a sample's pixels (boxes scaled onto the stored canvas)."""
    source = (
        str(record.path.relative_to(root)) if root and record.path.is_relative_to(root) else str(record.path)
    )
    meta = {"source": source, "width": original[0], "height": original[1]}
    if record.label is not None:
        return {**meta, "label": int(record.label)}
    scale = letterbox_scale(*original, pixels.side)
    return {
        **meta,
        "scale": scale,
        "boxes": np.round(record.boxes * scale, 3).tolist(),
        "labels": record.labels.astype(int).tolist(),
        "iscrowd": record.iscrowd.astype(bool).tolist(),
        "ignore": np.round(record.ignore * scale, 3).tolist(),
    }


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(payload), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(payload))


def _write_shard(path: Path, samples: list[tuple[str, bytes, dict]]) -> int:
    """One complete tar under a temp name, renamed into place; returns its size in bytes."""
    with atomic_path(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for key, jpeg, meta in samples:  # the WebDataset layout: KEY.jpg then KEY.json
                _add(tar, f"{key}.jpg", jpeg)
                _add(tar, f"{key}.json", json.dumps(meta).encode())
        size = tmp.stat().st_size
    return size


def write_split(
    out: Path, split: str, encoded: Iterable[tuple[str, bytes, dict]], size: ShardSize
) -> list[ShardInfo]:
    """The samples of one split as ``out/split/shard-NNNNNN.tar`` files, cut where ``size`` says."""
    shards: list[ShardInfo] = []
    pending: list[tuple[str, bytes, dict]] = []
    payload = 0
    for sample in encoded:
        pending.append(sample)
        payload += len(sample[1])
        if size.full(len(pending), payload):
            shards.append(_flush(out, split, len(shards), pending))
            pending, payload = [], 0
    if pending:
        shards.append(_flush(out, split, len(shards), pending))
    return shards


def _flush(out: Path, split: str, number: int, samples: list) -> ShardInfo:
    name = f"{split}/shard-{number:06d}.tar"
    return ShardInfo(name, len(samples), _write_shard(out / name, samples))


def encoded_samples(
    records: list[ImageRecord], pixels: Pixels, root: Path | None, issues: list[Issue],
    pool_map: Callable, progress: Callable[[], None] | None = None,
) -> Iterator[tuple[str, bytes, dict]]:  # fmt: skip
    """(key, JPEG bytes, annotation) of each readable record in order; unreadable ones go to ``issues``."""
    jobs = [(str(r.path), pixels.kind, pixels.side) for r in records]
    for i, (jpeg, original, error) in enumerate(pool_map(_encode, jobs)):
        if progress is not None:
            progress()
        if jpeg is None:
            issues.append(Issue.unreadable(records[i].path, error or "unreadable"))
            continue
        yield f"{i:08d}", jpeg, sample_json(records[i], original, pixels, root)


@dataclass(frozen=True)
class ShardPlan:
    """What ``lanner shard`` writes: where, at which pixel size, how big each shard, in which order."""

    out: Path
    image_size: int  # the training input size
    pixels: Pixels
    size: ShardSize
    seed: int = 0
    workers: int = 1


def write_shards(
    dataset: Dataset, plan: ShardPlan, source: str, progress=None
) -> tuple[ShardIndex, list[Issue]]:
    """Every split of ``dataset`` as shards under ``plan.out``, then the index (written last)."""
    out = plan.out
    if (out / INDEX_NAME).exists():
        raise ConfigError(f"{out}: already holds shards ({INDEX_NAME}); choose another folder or remove it")
    issues: list[Issue] = []
    splits: dict[str, list[ShardInfo]] = {}
    counts: dict[str, list[int]] = {}
    with _Pool(plan.workers) as pool:
        for split in _split_names(dataset):
            records = _shuffled([r for r in dataset.records if r.split == split], plan.seed)
            before = len(issues)
            samples = encoded_samples(records, plan.pixels, dataset.root, issues, pool, progress)
            splits[split] = write_split(out, split, samples, plan.size)
            bad = {i.path for i in issues[before:]}
            counts[split] = _class_counts(dataset, [r for r in records if str(r.path) not in bad])
    index = ShardIndex(
        dataset.task, list(dataset.classes), plan.image_size, plan.pixels.side, splits, source, counts,
        {"pixels": plan.pixels.kind, "jpeg_quality": JPEG_QUALITY, "source_format": dataset.format,
         "seed": plan.seed, "lanner_version": lanner.__version__,
         "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
         "skipped": [{"path": i.path, "problem": i.problem} for i in issues]},
    )  # fmt: skip
    write_json(out / INDEX_NAME, index.to_dict())
    return index, issues


def _split_names(dataset: Dataset) -> list[str]:
    order = {"train": 0, "val": 1, "test": 2}
    return sorted({r.split or "train" for r in dataset.records}, key=lambda s: (order.get(s, 3), s))


def _shuffled(records: list[ImageRecord], seed: int) -> list[ImageRecord]:
    order = np.random.default_rng(seed).permutation(len(records))
    return [records[i] for i in order]


def _class_counts(dataset: Dataset, records: list[ImageRecord]) -> list[int]:
    """Images per class (classification) or boxes per class (detection) of ``records``."""
    counts = np.zeros(len(dataset.classes), dtype=np.int64)
    for r in records:
        if r.label is not None:
            counts[r.label] += 1
        else:
            np.add.at(counts, r.labels.astype(np.int64), 1)
    return counts.tolist()


class _Pool:
    """``map`` over a process pool (several workers) or in this process (one: no fork cost)."""

    def __init__(self, workers: int) -> None:
        self.executor = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None

    def __enter__(self):
        if self.executor is None:
            return lambda fn, jobs: map(fn, jobs)
        return lambda fn, jobs: self.executor.map(fn, jobs, chunksize=16)

    def __exit__(self, *exc) -> None:
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)
