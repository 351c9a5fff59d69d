"""Seeded, stratified train/val splits, recorded in the run so they can be reproduced and audited."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from lanner._io import write_text
from lanner.data.records import Dataset


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


def write_split(path: str | Path, dataset: Dataset) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "split"])
    for r in dataset.records:
        label = dataset.classes[r.label] if r.label is not None else ""
        w.writerow([str(r.path), label, r.split or ""])
    write_text(path, buf.getvalue())
