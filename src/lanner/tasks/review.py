"""``lanner review RUN [DATA]``: likely label errors, from predictions of models that never saw the image.

Out of sample by default: the images of the reviewed split are dealt into K folds (seeded), and for
each fold the run's own settings (its config.yaml) train a fresh model on everything else, held-out
fold marked ``test`` so no training step sees it; that model then predicts the held-out fold. The
training itself is the caller's (``lanner.api.train``, handed in as ``train``), so this module adds no
trainer of its own. ``folds=0`` uses the run's model as is: fast, but it has usually trained on these
very images and tends to agree with their labels.

Each task's plug-in supplies a reviewer (``Task.reviewer()``: its training data, its predictions, its
rules in :mod:`lanner.eval.label_issues`); the issues go to RUN/review/label_issues.csv, most likely
first, with RUN/review/review.json saying how they were found.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape

from lanner._io import write_json, write_text
from lanner.config import TrainConfig, parse_duration
from lanner.data.classes import onto_classes
from lanner.data.formats import read_dataset, write_dataset
from lanner.data.records import Dataset
from lanner.data.split import apply_saved_split, select_splits
from lanner.errors import ConfigError, DataError
from lanner.eval.label_issues import LabelIssue, sort_issues, write_issues
from lanner.rundir import RunDir
from lanner.tasks.loading import LoadedRun, load_for_inference

Train = Callable[[TrainConfig], Path]  # trains a new run from a config, returns its directory
HELD_OUT = "test"  # the split name a fold's held-out images get: never trained on, never validated on
SHOWN = 5  # issues printed in the console summary


@dataclass(frozen=True)
class ReviewSettings:
    data: str | None = None  # another dataset on the run's classes (default: the run's own data)
    split: str = "train"
    folds: int = 3  # 0: the run's own model
    time: str | None = None  # the budget of all folds' training together, split evenly
    device: str = "auto"

    def fold_time(self) -> str | None:
        """Each fold's share of ``time`` as a duration (None: the run's own settings decide)."""
        if self.time is None:
            return None
        try:
            seconds = parse_duration(self.time)
        except ValueError as e:
            raise ConfigError(f"--time: {e}") from e
        return f"{seconds / self.folds:.3f}s"

    def check(self) -> None:
        if self.folds < 0 or self.folds == 1:
            raise ConfigError(
                f"--folds {self.folds}: give 0 (the run's own model) or 2 or more "
                "(models trained without each fold)"
            )
        if self.folds:
            self.fold_time()


def review_run(run: str | Path, settings: ReviewSettings, train: Train, console: Console) -> dict:
    """Find likely label errors in a split of a run's data; writes RUN/review; returns the summary."""
    settings.check()
    started = time.monotonic()
    loaded = load_for_inference(run, settings.device)
    reviewer = loaded.task.reviewer()
    dataset = _review_data(loaded, reviewer, settings.data, console)
    subset, split = select_splits(dataset, settings.split)
    if not subset.records:
        raise DataError(
            f"{settings.data or loaded.config.data}: no images in split {split!r} (splits: {dataset.splits})"
        )
    if settings.folds == 0:
        predictions = reviewer.predict(loaded, subset, loaded.classes, console)
    else:
        predictions = _out_of_sample(loaded, reviewer, dataset, subset, settings, train, console)
    issues = sort_issues(reviewer.issues(subset, predictions))
    out = write_issues(loaded.run.label_issues, issues, reviewer.columns)
    summary = {
        "split": split, "folds": settings.folds, "images": len(predictions), "issues": len(issues),
        "kinds": dict(Counter(i.kind for i in issues)), "seconds": round(time.monotonic() - started, 1),
        "file": str(out),
    }  # fmt: skip
    write_json(loaded.run.review / "review.json", summary)
    _print_summary(console, summary, issues)
    return summary


def _review_data(loaded: LoadedRun, reviewer, data: str | None, console: Console) -> Dataset:
    """Every image of the data with its split: the run's own data and split.csv, or ``data`` on the
    run's classes (its images without a split count as ``train``)."""
    if data is None:
        dataset = reviewer.training_data(loaded.config)
        apply_saved_split(dataset, loaded.run.split)
        return dataset
    dataset, dropped = onto_classes(read_dataset(data), loaded.classes)
    if dropped:
        console.print(
            f"[yellow]note[/]: class(es) {escape(', '.join(dropped))} unknown to this model are left out"
        )
    for record in dataset.records:
        record.split = record.split or "train"
    return dataset


def assign_folds(count: int, folds: int, seed: int) -> np.ndarray:
    """[count] fold of each image: a seeded shuffle dealt round-robin, so fold sizes differ by <= 1."""
    if count < folds:
        raise ConfigError(f"--folds {folds}: the split has only {count} image(s); use fewer folds")
    order = np.random.default_rng(seed + 104729).permutation(count)
    fold = np.empty(count, dtype=np.int64)
    fold[order] = np.arange(count) % folds
    return fold


def _out_of_sample(loaded, reviewer, dataset: Dataset, subset: Dataset, settings: ReviewSettings,
                   train: Train, console: Console) -> dict:  # fmt: skip
    """Each image's prediction by a model trained with its fold held out."""
    fold_of = assign_folds(len(subset.records), settings.folds, loaded.config.seed)
    root = loaded.run.review / "folds"
    shutil.rmtree(root, ignore_errors=True)  # an earlier review's folds: ours to replace
    predictions = {}
    for k in range(settings.folds):
        held = [r for r, f in zip(subset.records, fold_of, strict=True) if f == k]
        console.print(
            f"[bold]review fold {k + 1}/{settings.folds}[/]: training without {len(held)} images, "
            "then predicting them"
        )
        fold_run = train_fold(loaded, reviewer, dataset, held, root / f"fold{k + 1}", settings, train)
        fold_model = load_for_inference(fold_run, settings.device)
        predictions.update(
            reviewer.predict(fold_model, replace(subset, records=held), loaded.classes, console)
        )
        shutil.rmtree(RunDir(fold_run).checkpoints, ignore_errors=True)  # used; its history and config stay
    return predictions


def train_fold(loaded, reviewer, dataset: Dataset, held: list, folder: Path, settings: ReviewSettings,
               train: Train) -> Path:  # fmt: skip
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


def _print_summary(console: Console, summary: dict, issues: list[LabelIssue]) -> None:
    how = (
        f"{summary['folds']}-fold out-of-sample predictions"
        if summary["folds"]
        else "the run's own model ([yellow]--folds 0: less reliable[/], it may have trained on these images "
        "and tends to agree with their labels)"
    )
    console.print(f"review of split {summary['split']} ({summary['images']} images) with {how}")
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(summary["kinds"].items())) or "none"
    console.print(f"{summary['issues']} likely label errors ({kinds}) -> {escape(summary['file'])}")
    for issue in issues[:SHOWN]:
        change = f"{issue.given or '(no box)'} -> {issue.suggested or '?'}"
        console.print(
            f"  {issue.score:6.3f}  {issue.kind:<12} {escape(issue.path)}  {escape(change)}", highlight=False
        )
