"""The out-of-sample models of ``lanner review``: K folds, each predicted by a model trained without it.

Each fold lives in RUN/review/folds/fold<k>/: ``data/`` (the training data with the fold held out),
``run/`` (the fold's training run; its checkpoints are removed once used) and ``predictions.json``
(the fold's images, what they were trained with, and the model's predictions on them). A fold whose
predictions.json matches the fold being asked for (same images, labels, settings) is not trained
again, so a review stopped half-way (Ctrl-C) continues where it stopped when re-run: the finished
folds are reused, the interrupted one trains again from the start.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape

from lanner._io import write_json, write_text
from lanner.config import TrainConfig
from lanner.data.formats import write_dataset
from lanner.data.records import Dataset
from lanner.errors import ConfigError, Interrupted
from lanner.rundir import RunDir
from lanner.tasks.loading import load_for_inference

Train = Callable[[TrainConfig], Path]  # trains a new run from a config, returns its directory
HELD_OUT = "test"  # the split name a fold's held-out images get: never trained on, never validated on
PREDICTIONS = "predictions.json"


def assign_folds(count: int, folds: int, seed: int) -> np.ndarray:
    """[count] fold of each image: a seeded shuffle dealt round-robin, so fold sizes differ by <= 1."""
    if count < folds:
        raise ConfigError(f"--folds {folds}: the split has only {count} image(s); use fewer folds")
    order = np.random.default_rng(seed + 104729).permutation(count)
    fold = np.empty(count, dtype=np.int64)
    fold[order] = np.arange(count) % folds
    return fold


def out_of_sample(loaded, reviewer, dataset: Dataset, subset: Dataset, settings, train: Train,
                  console: Console) -> dict:  # fmt: skip
    """Each image's prediction by a model trained with its fold held out (``settings``: ReviewSettings)."""
    fold_of = assign_folds(len(subset.records), settings.folds, loaded.config.seed)
    root = loaded.run.review / "folds"
    if settings.refresh:
        shutil.rmtree(root, ignore_errors=True)  # --refresh: every fold trains again
    _remove_other_folds(root, settings.folds)
    predictions, labels = {}, labels_digest(dataset)
    for k in range(settings.folds):
        held = [r for r, f in zip(subset.records, fold_of, strict=True) if f == k]
        folder, key = root / f"fold{k + 1}", _fold_key(loaded, held, labels, settings)
        done = _finished(folder, key, reviewer)
        if done is not None:
            console.print(f"[bold]review fold {k + 1}/{settings.folds}[/]: reusing its finished predictions")
            predictions.update(done)
            continue
        console.print(
            f"[bold]review fold {k + 1}/{settings.folds}[/]: training without {len(held)} images, "
            "then predicting them"
        )
        with _rerun_hint(console, k, settings.folds, settings.command(loaded.run.path)):
            found = _fold(
                loaded, reviewer, dataset, replace(subset, records=held), folder, settings, train, console
            )
        write_json(
            folder / PREDICTIONS, {**key, "predictions": {p: reviewer.encode(v) for p, v in found.items()}}
        )
        predictions.update(found)
    return predictions


def _fold(loaded, reviewer, dataset: Dataset, held: Dataset, folder: Path, settings, train: Train,
          console: Console) -> dict:  # fmt: skip
    """Train fold ``folder`` afresh (a stopped one's leftovers are ours to replace), predict its images."""
    shutil.rmtree(folder, ignore_errors=True)
    fold_run = train_fold(loaded, reviewer, dataset, held.records, folder, settings, train)
    fold_model = load_for_inference(fold_run, settings.device)
    found = reviewer.predict(fold_model, held, loaded.classes, console)
    shutil.rmtree(RunDir(fold_run).checkpoints, ignore_errors=True)  # used; its history and config stay
    return found


def _fold_key(loaded, held: list, labels: str, settings) -> dict:
    """What a fold's predictions depend on: its images, every label it trained on (``labels``: their
    digest; fixed labels train the fold again), the run's settings and the time per fold."""
    config = json.loads(json.dumps(loaded.config.model_dump(mode="json"), default=str))
    held_out = sorted(str(r.path) for r in held)
    return {"held": held_out, "labels": labels, "config": config, "time": settings.fold_time()}


def labels_digest(dataset: Dataset) -> str:
    """A digest of every image's path, split and labels (class, or boxes and their classes)."""
    digest = hashlib.sha256()
    for r in dataset.records:
        digest.update(f"{r.path}|{r.split}|{r.label}|{r.labels.tolist()}|".encode())
        digest.update(np.round(r.boxes, 2).tobytes())
    return digest.hexdigest()


def _finished(folder: Path, key: dict, reviewer) -> dict | None:
    """The fold's saved predictions when they were made for ``key``, else None."""
    try:
        saved = json.loads((folder / PREDICTIONS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or any(saved.get(k) != v for k, v in key.items()):
        return None
    return {p: reviewer.decode(v) for p, v in saved.get("predictions", {}).items()}


def _remove_other_folds(root: Path, folds: int) -> None:
    """Fold folders beyond ``folds`` (an earlier review with more folds): never reusable here."""
    for folder in root.glob("fold*") if root.is_dir() else []:
        if folder.name[4:].isdigit() and int(folder.name[4:]) > folds:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _rerun_hint(console: Console, k: int, folds: int, hint: str) -> Iterator[None]:
    """On Ctrl-C in fold ``k``: say to re-run the review (finished folds are kept), not to resume the
    fold's own run, which the review would not pick up."""
    try:
        yield
    except (Interrupted, KeyboardInterrupt) as stop:
        done = {0: "", 1: "fold 1 is finished and kept; "}.get(k, f"folds 1-{k} are finished and kept; ")
        console.print(
            f"[yellow]review stopped[/] in fold {k + 1}/{folds}: {done}"
            f"re-run [bold]{escape(hint)}[/] to continue"
        )
        if isinstance(stop, Interrupted):
            stop.hint = hint  # replaces the fold run's own `lanner resume`, which the CLI would print
        raise


def train_fold(loaded, reviewer, dataset: Dataset, held: list, folder: Path, settings, train: Train) -> Path:
    """Train the run's settings on ``dataset`` with ``held`` out (split ``test``); the new run's directory.

    The fold's data is written as a CSV (absolute image paths, classes.txt beside it) carrying the
    splits, so the training reads it like any dataset and keeps the splits it finds."""
    out = {str(r.path) for r in held}
    records = [
        replace(r, path=Path(r.path).resolve(), split=HELD_OUT if str(r.path) in out else r.split)
        for r in dataset.records
    ]
    data = folder / "data" / "labels.csv"
    write_dataset(replace(dataset, records=records, issues=[]), reviewer.format, data)
    write_text(data.parent / "classes.txt", "".join(f"{c}\n" for c in dataset.classes))
    update = {
        "data": str(data), "format": reviewer.format, "classes": None, "rename": {},
        "allow_outside_root": True, "run": str(folder / "run"), "task": loaded.meta.task, "track": None,
        "device": settings.device,
    }  # fmt: skip
    if settings.fold_time() is not None:
        update["time"] = settings.fold_time()
    return Path(train(loaded.config.model_copy(update=update)))
