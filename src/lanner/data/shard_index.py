"""The index of a shard folder (``lanner shard`` writes it, ``lanner train`` streams from it).

A shard folder holds one set of tar shards per split (``train/shard-000000.tar``, ...) in the
WebDataset layout (``KEY.jpg`` + ``KEY.json`` per sample) and ``lanner-shards.json``: the task,
classes, pixel size, and every shard's name and sample count. The index is written last, so a
folder with an index is complete; without one it is no shard folder at all.

The folder can be local or any fsspec URL (``s3://bucket/shards``, ``file:///...``); only the
index and the tars are read, through ``fsspec.open``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import fsspec

from lanner.data.remote import is_mirrored, is_url
from lanner.errors import DataError

INDEX_NAME = "lanner-shards.json"
INDEX_FORMAT = "lanner-shards"
INDEX_VERSION = 1


def join(source: str | Path, name: str) -> str:
    """``name`` inside the shard folder ``source`` (a local path or a URL)."""
    text = str(source)
    return f"{text.rstrip('/')}/{name}" if "://" in text else str(Path(text) / name)


@dataclass(frozen=True)
class ShardInfo:
    name: str  # relative to the folder: "train/shard-000000.tar"
    count: int  # samples in the shard
    bytes: int = 0


@dataclass
class ShardIndex:
    """What ``lanner-shards.json`` says of a shard folder."""

    task: str
    classes: list[str]
    image_size: int  # the training input size the pixels were prepared for
    stored_size: int  # the side of every stored square (classification: a little larger, for crops)
    splits: dict[str, list[ShardInfo]]
    source: str = ""
    class_counts: dict[str, list[int]] = field(default_factory=dict)  # per split: images per class
    extra: dict = field(default_factory=dict)  # source format, lanner version, skipped files, ...

    def count(self, split: str) -> int:
        return sum(s.count for s in self.splits.get(split, []))

    def to_dict(self) -> dict:
        return {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "task": self.task,
            "classes": self.classes,
            "image_size": self.image_size,
            "stored_size": self.stored_size,
            "source": self.source,
            "splits": {k: [s.__dict__ for s in v] for k, v in self.splits.items()},
            "counts": {k: self.count(k) for k in self.splits},
            "class_counts": self.class_counts,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict, where: str) -> ShardIndex:
        if d.get("format") != INDEX_FORMAT or d.get("version") != INDEX_VERSION:
            raise DataError(f"{where}: not a lanner shard index (version {INDEX_VERSION})")
        try:
            splits = {k: [ShardInfo(**s) for s in v] for k, v in d["splits"].items()}
            known = {*cls.__dataclass_fields__, "format", "version", "counts"}
            return cls(
                d["task"], list(d["classes"]), int(d["image_size"]), int(d["stored_size"]), splits,
                d.get("source", ""), d.get("class_counts", {}),
                {k: v for k, v in d.items() if k not in known},
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: malformed shard index ({type(e).__name__}: {e})") from e


def is_shard_folder(source: str | Path | None) -> bool:
    """Whether ``source`` is a shard folder (it holds ``lanner-shards.json``)."""
    if not source:
        return False
    if is_url(source) and is_mirrored(str(source)):  # a dataset fetched before; shards are never mirrored
        return False
    try:
        with fsspec.open(join(source, INDEX_NAME), "rb"):
            return True
    except (OSError, ValueError, ImportError):  # missing, not a folder, or an unknown URL scheme
        return False


def read_index(source: str | Path) -> ShardIndex:
    """The index of the shard folder ``source``; a clear DataError when it is missing or broken."""
    where = join(source, INDEX_NAME)
    try:
        with fsspec.open(where, "rb") as f:
            raw = f.read()
    except (OSError, ValueError, ImportError) as e:
        raise DataError(
            f"{where}: cannot read the shard index ({e}); write shards with `lanner shard`"
        ) from e
    try:
        return ShardIndex.from_dict(json.loads(raw), where)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e})") from e
