"""The one in-memory dataset representation every format reads into and writes out of.

A dataset is a class list plus one record per image. Classification records carry a single
``label``; detection records carry boxes as float xyxy pixels with a class index each, plus
optional crowd flags and ignore regions. Readers validate while they read and log every change
or problem as an :class:`Issue`, so ``lanner check`` can show the user exactly what happened.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

Task = Literal["classify", "detect"]
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


def canonical_split(name: str | None) -> str | None:
    """Map the many spellings of split names found in the wild onto train/val/test."""
    if name is None:
        return None
    return SPLIT_ALIASES.get(name.lower(), name.lower())


@dataclass
class Issue:
    """One problem found (and possibly fixed) while reading data.

    ``action`` says what lanner did about it: ``fixed`` (data changed, e.g. swapped corners),
    ``dropped`` (an annotation removed), ``skipped`` (a whole image left out), ``kept`` (noted
    only) or ``error`` (cannot continue under --strict).
    """

    path: str
    problem: str
    action: str = "skipped"
    kind: str = "other"

    def __str__(self) -> str:
        return f"{self.path}: {self.problem} ({self.action})"

    @classmethod
    def unreadable(cls, path, error: str) -> Issue:
        """A skipped image; ``error`` is a DataError message ("<path>: <reason>")."""
        return cls(str(path), error.split(": ", 1)[-1], action="skipped", kind="unreadable")


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.float32)


def _empty_labels() -> np.ndarray:
    return np.zeros((0,), dtype=np.int64)


def _empty_flags() -> np.ndarray:
    return np.zeros((0,), dtype=bool)


@dataclass
class ImageRecord:
    """One image and its annotations. Boxes are float32 [N, 4] xyxy in pixels of the upright image."""

    path: Path
    width: int | None = None
    height: int | None = None
    label: int | None = None  # classification: class index
    boxes: np.ndarray = field(default_factory=_empty_boxes)  # [N, 4] xyxy
    labels: np.ndarray = field(default_factory=_empty_labels)  # [N]
    iscrowd: np.ndarray = field(default_factory=_empty_flags)  # [N]
    ignore: np.ndarray = field(default_factory=_empty_boxes)  # [M, 4] regions neither TP nor FP
    split: str | None = None
    image_id: int | None = None  # id in the source file when it had one (COCO)
    scores: np.ndarray | None = None  # [N] a model's confidence per box: predictions only
    # [N] a remark per box (classification: per image), e.g. a `lanner review` suggestion; written
    # where a format has room for it (Labelme description or flag, COCO attributes)
    notes: list[str] | None = None

    def __post_init__(self) -> None:
        # Callers building records by hand often leave the crowd flags out: default to "not crowd".
        if len(self.iscrowd) != len(self.boxes) and len(self.iscrowd) == 0:
            self.iscrowd = np.zeros(len(self.boxes), dtype=bool)

    @property
    def num_boxes(self) -> int:
        return int(len(self.boxes))


@dataclass
class Dataset:
    """A class list, one record per image, and the issues met while reading."""

    classes: list[str]
    records: list[ImageRecord]
    task: Task = "classify"
    root: Path | None = None
    format: str = "unknown"
    issues: list[Issue] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def splits(self) -> list[str]:
        return sorted({r.split for r in self.records if r.split})

    def subset(self, split: str | None) -> Dataset:
        """Records of one split (all records when ``split`` is None)."""
        if split is None:
            return self
        split = canonical_split(split)
        recs = [r for r in self.records if r.split == split]
        return Dataset(self.classes, recs, self.task, self.root, self.format, self.issues)

    def class_counts(self) -> dict[str, int]:
        """Images per class (classification) or boxes per class (detection)."""
        counts: Counter[int] = Counter()
        for r in self.records:
            if self.task == "classify":
                if r.label is not None:
                    counts[r.label] += 1
            else:
                counts.update(int(x) for x in r.labels)
        return {name: counts.get(i, 0) for i, name in enumerate(self.classes)}
