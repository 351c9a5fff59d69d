"""What a dataset must hold before a run trains on it, checked once the data is read (before any
image is decoded or any weight is built), so a hopeless run fails at once with the reason."""

from __future__ import annotations

from lanner.data.records import Dataset
from lanner.errors import DataError


def require_trainable(dataset: Dataset, data: str, *, min_classes: int, learner: str) -> Dataset:
    """``dataset`` when it has records and at least ``min_classes`` classes; else a DataError naming
    ``data`` and why. A classifier needs two classes to tell apart (with one its loss is 0 from the
    first step and eval has no second class); when every entry was refused, the first reader issue
    (e.g. an image outside the dataset root) says why, not just "no images"."""
    if not dataset.records:
        raise DataError(f"{data}: no usable images{_first_issue(dataset)}")
    if len(dataset.classes) < min_classes:
        found = ", ".join(dataset.classes) or "none"
        raise DataError(
            f"{data}: {len(dataset.classes)} class(es) ({found}); {learner} needs at least "
            f"{min_classes}: add annotated images of another class (or choose other --classes)"
        )
    return dataset


def _first_issue(dataset: Dataset) -> str:
    if not dataset.issues:
        return ""
    issue, more = dataset.issues[0], len(dataset.issues) - 1
    others = f" (and {more} more problem(s); `lanner check` lists them)" if more else ""
    return f": every entry was refused, e.g. {issue.path}: {issue.problem}{others}"
