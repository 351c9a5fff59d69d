"""Choosing, renaming and re-indexing classes: one mapping, one rule for classes a run does not know.

``--classes`` keeps some classes and ``--rename OLD=NEW`` renames (or merges, when two map to one
name) them; evaluating a run on another dataset puts that dataset's labels onto the run's classes
by name. In every case the rule for a class outside the target list is the same: its images
(classification) or boxes (detection) are dropped, and the caller is told which classes went.
For detection an image left without boxes stays, as a negative: the dropped classes are
background to this model. A class named by the user that the data does not have is an error.
"""

from __future__ import annotations

import numpy as np

from lanner.data.records import Dataset
from lanner.errors import DataError


def class_mapping(
    classes: list[str], keep: list[str] | None, rename: dict[str, str]
) -> tuple[list[str], dict[int, int]]:
    """(new class names, old index -> new index) for ``keep`` (only these) and ``rename`` (merge)."""
    unknown = [c for c in (keep or []) + list(rename) if c not in classes]
    if unknown:
        raise DataError(f"class(es) {', '.join(unknown)} not in the data; it has: {', '.join(classes)}")
    kept = [c for c in classes if not keep or c in keep]
    new_names = sorted({rename.get(c, c) for c in kept})
    return new_names, {classes.index(c): new_names.index(rename.get(c, c)) for c in kept}


def remap(dataset: Dataset, new_classes: list[str], to_new: dict[int, int]) -> Dataset:
    """The dataset with labels re-indexed by ``to_new``; what ``to_new`` lacks is dropped (see above)."""
    records = []
    for r in dataset.records:
        if r.label is not None:  # a classification record: kept only when its class is
            r.label = to_new.get(r.label)
            if r.label is None:
                continue
        records.append(r)
        if len(r.labels):
            keep = np.array([int(c) in to_new for c in r.labels], dtype=bool)  # [N]
            if len(r.iscrowd) == len(keep):
                r.iscrowd = r.iscrowd[keep]
            r.boxes = r.boxes[keep]
            r.labels = np.array([to_new[int(c)] for c in r.labels[keep]], dtype=np.int64)
    return Dataset(list(new_classes), records, dataset.task, dataset.root, dataset.format, dataset.issues)


def select_classes(dataset: Dataset, keep: list[str] | None, rename: dict[str, str]) -> Dataset:
    """``--classes`` and ``--rename`` applied to a dataset."""
    if not keep and not rename:
        return dataset
    return remap(dataset, *class_mapping(dataset.classes, keep, rename))


def onto_classes(dataset: Dataset, classes: list[str]) -> tuple[Dataset, list[str]]:
    """Another dataset's labels put onto a run's ``classes`` by name; returns it and the dropped class
    names. None of its classes known to the run is an error (nothing could be evaluated)."""
    to_run = {i: classes.index(c) for i, c in enumerate(dataset.classes) if c in classes}
    if not to_run:
        raise DataError(
            f"{dataset.root}: none of its classes ({', '.join(dataset.classes)}) is known to this "
            f"model (it knows: {', '.join(classes)})"
        )
    dropped = [c for c in dataset.classes if c not in classes]
    return remap(dataset, classes, to_run), dropped
