"""Which per-class score thresholds an eval or predict of a run uses, and where they are kept.

They are chosen on the run's own val split (:mod:`lanner.eval.thresholds`) and saved in
RUN/thresholds.json with the checkpoint they were chosen for; a later eval or predict with the
same checkpoint reads them, one with another checkpoint (after a resume) chooses them again.
``--score-threshold X`` replaces them all with X.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lanner._io import write_json
from lanner.errors import DataError
from lanner.eval.thresholds import ChosenThreshold, per_class_array


def checkpoint_stamp(checkpoint: Path) -> str:
    """Which checkpoint file, as it is now (a resume rewrites it)."""
    stat = Path(checkpoint).stat()
    return f"{Path(checkpoint).name}:{stat.st_size}:{stat.st_mtime_ns}"


def save_thresholds(loaded, chosen: dict[str, ChosenThreshold]) -> None:
    write_json(
        loaded.run.thresholds,
        {
            "split": "val",
            "checkpoint": checkpoint_stamp(loaded.checkpoint),
            "classes": {name: {"threshold": c.threshold, "f1": c.f1} for name, c in chosen.items()},
        },
    )


def saved_thresholds(loaded) -> dict[str, float | None] | None:
    """The thresholds saved for this checkpoint, or None (none saved, or for another checkpoint)."""
    path = loaded.run.thresholds
    try:
        saved = json.loads(path.read_text())
        if saved.get("checkpoint") != checkpoint_stamp(loaded.checkpoint):
            return None
        return {name: entry.get("threshold") for name, entry in saved["classes"].items()}
    except (OSError, ValueError, KeyError, AttributeError):
        return None


def class_thresholds(
    loaded,
    override: float | None,
    default: float,
    choose_on_val: Callable[[], dict[str, ChosenThreshold]] | None,
    on_val: bool = False,
) -> np.ndarray:
    """[C] the thresholds to use: ``override`` for all; else the saved ones; else (when
    ``choose_on_val`` is given: the run's own data) chosen on val now and saved; else ``default``.
    ``on_val``: this eval is of the run's val split itself, so they are chosen afresh on it."""
    classes = loaded.classes
    if override is not None:
        return np.full(len(classes), float(override))
    saved = None if on_val else saved_thresholds(loaded)
    if saved is None and choose_on_val is not None:
        try:
            chosen = choose_on_val()
        except DataError:  # no val split: nothing to choose on
            chosen = None
        if chosen is not None:
            save_thresholds(loaded, chosen)
            saved = {name: c.threshold for name, c in chosen.items()}
    return per_class_array(saved or {}, classes, default)
