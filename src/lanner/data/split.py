"""Seeded, stratified train/val splits, recorded in the run so they can be reproduced and audited."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from lanner._io import write_text
from lanner.data.records import Dataset, canonical_split
from lanner.errors import CheckpointError


def assign_validation_split(dataset: Dataset, fraction: float, seed: int) -> bool:
    """Give records without a split ``train`` or ``val`` (stratified by class); True if it made one.

    Records already in a ``val`` split are left alone, so a split found in the data always wins.
    """
    if any(r.split == "val" for r in dataset.records):
        for r in dataset.records:
            r.split = r.split or "train"
        return False
    pool = [r for r in dataset.records if r.split in (None, "train")]
    rng = np.random.default_rng(seed)
    by_class: dict[int, list] = {}
    for r in pool:
        key = r.label if r.label is not None else (int(r.labels[0]) if len(r.labels) else -1)
        by_class.setdefault(key, []).append(r)
    for recs in by_class.values():
        order = rng.permutation(len(recs))
        # At least one validation image per class that has two or more images.
        n_val = int(round(len(recs) * fraction)) if len(recs) > 1 else 0
        n_val = max(n_val, 1) if len(recs) > 1 and fraction > 0 else n_val
        for rank, i in enumerate(order):
            recs[i].split = "val" if rank < n_val else "train"
    return True


def split_keys(dataset: Dataset) -> list[str]:
    """How split.csv names each image: relative to the dataset's root (so the split is found again
    whether DATA is given relative, absolute or from another working directory), else absolute."""
    root = None
    if dataset.root is not None:  # looked up once, not per image
        root = os.path.abspath(dataset.root)
        root = root if os.path.isdir(root) else os.path.dirname(root)  # DATA may name an annotation file
    return [_split_key(os.path.abspath(r.path), root) for r in dataset.records]


def _split_key(full: str, root: str | None) -> str:
    if root is not None:
        relative = os.path.relpath(full, root)
        if not relative.startswith(os.pardir):
            return Path(relative).as_posix()
    return full


def write_split(path: str | Path, dataset: Dataset) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "split"])
    for r, key in zip(dataset.records, split_keys(dataset), strict=True):
        label = dataset.classes[r.label] if r.label is not None else ""
        w.writerow([key, label, r.split or ""])
    write_text(path, buf.getvalue())


def apply_saved_split(dataset: Dataset, split_file: Path) -> None:
    """On resume or eval, reuse the run's recorded split (its split.csv) instead of drawing a new one."""
    split_file = Path(split_file)
    if not split_file.exists():
        raise CheckpointError(f"{split_file}: missing; cannot restore this run's train/val split")
    with split_file.open(newline="") as f:
        saved = {row["path"]: row["split"] for row in csv.DictReader(f)}
    for r, key in zip(dataset.records, split_keys(dataset), strict=True):
        # Older runs wrote the path as read (relative to the working directory when DATA was).
        r.split = saved.get(key, saved.get(str(r.path), r.split))


def split_for_run(dataset: Dataset, split_file: Path, fraction: float, seed: int, fresh: bool) -> bool:
    """A new run draws (and records) its split; a resumed one restores it. True if one was drawn."""
    if not fresh:
        apply_saved_split(dataset, split_file)
        return False
    made = assign_validation_split(dataset, fraction, seed)
    write_split(split_file, dataset)
    return made


def default_split(dataset: Dataset) -> str | None:
    """The split named test, else val; None (all images) when the data has no splits."""
    splits = set(dataset.splits)
    return next((s for s in ("test", "val") if s in splits), None)


def select_splits(dataset: Dataset, split: str | None) -> tuple[Dataset, str | None]:
    """``--split``: one name, several joined by commas or '+' (``val,test``), or None for the default."""
    if split is None:
        split = default_split(dataset)
        return dataset.subset(split), split
    names = [canonical_split(s.strip()) for s in split.replace("+", ",").split(",") if s.strip()]
    records = [r for r in dataset.records if r.split in names]
    subset = Dataset(dataset.classes, records, dataset.task, dataset.root, dataset.format, dataset.issues)
    return subset, "+".join(names)
