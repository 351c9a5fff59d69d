"""``lanner review RUN [DATA]``: likely label errors, from predictions of models that never saw the image.

Out of sample by default: the images of the reviewed split are dealt into K folds (seeded), and for
each fold the run's own settings (its config.yaml) train a fresh model on everything else, held-out
fold marked ``test`` so no training step sees it; that model then predicts the held-out fold. The
training itself is the caller's (``lanner.api.train``, handed in as ``train``), so this module adds no
trainer of its own. ``folds=0`` uses the run's model as is: fast, but it has usually trained on these
very images and tends to agree with their labels.

Each task's plug-in supplies a reviewer (``Task.reviewer()``: its training data, its predictions, its
rules in :mod:`lanner.eval.label_issues`); the issues go to RUN/review/label_issues.csv, most likely
first, with RUN/review/review.json saying how they were found. The folds are kept
(:mod:`lanner.tasks.review_folds`), so a stopped review continues where it stopped.

``export`` (``--export labelme|coco OUT``) also writes the flagged images with their labels and the
suggestions marked, for an annotation tool (:mod:`lanner.tasks.review_export`); when
label_issues.csv is newer than the checkpoint and was made for the same data and split, it is
exported as it is, without reviewing again (``refresh`` reviews again).
"""

from __future__ import annotations

import json
import shlex
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from lanner._io import write_json
from lanner.config import parse_duration
from lanner.data.classes import onto_classes
from lanner.data.formats import read_dataset
from lanner.data.records import Dataset
from lanner.data.split import apply_saved_split, select_splits
from lanner.errors import ConfigError, DataError
from lanner.eval.label_issues import LabelIssue, read_issues, sort_issues, write_issues
from lanner.tasks import review_export
from lanner.tasks.loading import LoadedRun, load_for_inference
from lanner.tasks.review_folds import Train, out_of_sample

SHOWN = 5  # issues printed in the console summary


@dataclass(frozen=True)
class ReviewSettings:
    data: str | None = None  # another dataset on the run's classes (default: the run's own data)
    split: str = "train"
    folds: int = 3  # 0: the run's own model
    time: str | None = None  # the budget of all folds' training together, split evenly
    device: str = "auto"
    refresh: bool = False  # review again: no fold and no label_issues.csv of an earlier review reused
    export: str | None = None  # labelme | coco: also write the flagged images for an annotation tool
    out: str | Path | None = None  # where the export goes: a new (or empty) folder
    force: bool = False  # replace ``out`` even when it holds files

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
        if self.export:
            review_export.check_target(self.export, self.out, self.force)

    def command(self, run: str | Path) -> str:
        """The `lanner review` command line of these settings (what to re-run after a Ctrl-C)."""
        words = ["lanner", "review", str(run), *([self.data] if self.data else []), "--split", self.split]
        words += ["--folds", str(self.folds), *(["--time", self.time] if self.time else [])]
        words += ["--device", self.device] if self.device != "auto" else []
        if self.export:
            words += ["--export", self.export, str(self.out), *(["--force"] if self.force else [])]
        return shlex.join(words)


def review_run(run: str | Path, settings: ReviewSettings, train: Train, console: Console) -> dict:
    """Find likely label errors in a split of a run's data; writes RUN/review; returns the summary
    (with ``export``: also the flagged images for an annotation tool, see the module's docstring)."""
    settings.check()
    loaded = load_for_inference(run, settings.device)
    if settings.export:
        review_export.refuse_inside(
            settings.out, [loaded.run.path, Path(settings.data or loaded.config.data)]
        )
    reviewer = loaded.task.reviewer()
    dataset = _review_data(loaded, reviewer, settings.data, console)
    subset, split = select_splits(dataset, settings.split)
    if not subset.records:
        raise DataError(
            f"{settings.data or loaded.config.data}: no images in split {split!r} (splits: {dataset.splits})"
        )
    summary = _earlier_review(loaded, settings, split, console) if settings.export else None
    if summary is None:
        summary = _find_issues(loaded, reviewer, dataset, subset, split, settings, train, console)
    if settings.export:
        rows = read_issues(loaded.run.label_issues)
        summary["export"] = review_export.export_issues(subset, rows, reviewer, settings.export, settings.out)
        write_json(loaded.run.review / "review.json", summary)  # the report says where the fixes went
        _print_export(console, summary["export"])
    return summary


def _find_issues(loaded, reviewer, dataset: Dataset, subset: Dataset, split: str, settings: ReviewSettings,
                 train: Train, console: Console) -> dict:  # fmt: skip
    """Predict every image of ``subset`` out of sample (or with the run's model), apply the task's rules,
    write label_issues.csv and review.json; the summary."""
    started = time.monotonic()
    if settings.folds == 0:
        predictions = reviewer.predict(loaded, subset, loaded.classes, console)
    else:
        predictions = out_of_sample(loaded, reviewer, dataset, subset, settings, train, console)
    issues = sort_issues(reviewer.issues(subset, predictions))
    out = write_issues(loaded.run.label_issues, issues, reviewer.columns)
    summary = {
        "data": settings.data, "split": split, "folds": settings.folds,
        "images": len(predictions), "issues": len(issues), "kinds": dict(Counter(i.kind for i in issues)),
        "seconds": round(time.monotonic() - started, 1), "file": str(out),
    }  # fmt: skip
    write_json(loaded.run.review / "review.json", summary)
    _print_summary(console, summary, issues)
    return summary


def _earlier_review(loaded: LoadedRun, settings: ReviewSettings, split: str, console: Console) -> dict | None:
    """review.json of an earlier review that can be exported as it is: newer than the checkpoint, of
    the same data and split (None: review again)."""
    csv, meta = loaded.run.label_issues, loaded.run.review / "review.json"
    if settings.refresh or not csv.is_file() or not meta.is_file():
        return None
    try:
        summary = json.loads(meta.read_text(encoding="utf-8"))
    except ValueError:
        return None
    same = "data" in summary and summary.get("split") == split and summary["data"] == settings.data
    if not same or csv.stat().st_mtime < loaded.checkpoint.stat().st_mtime:
        return None
    when = datetime.fromtimestamp(csv.stat().st_mtime).isoformat(sep=" ", timespec="minutes")
    console.print(
        f"exporting the review of {when} ({escape(str(csv))}: {summary.get('issues')} issues, split {split}, "
        f"{summary.get('folds')} folds), newer than the checkpoint; --refresh reviews again"
    )
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


def _print_export(console: Console, info: dict) -> None:
    if not info["images"]:
        console.print(f"no likely label errors: nothing exported to {escape(info['out'])}")
        return
    console.print(
        f"exported {info['images']} flagged images with {info['suggestions']} suggestions -> "
        f"{escape(info['out'])} ({info['format']}): the labels as they are, each suggestion an extra "
        f"annotation in a class '{review_export.SUGGESTED}<class>' to accept or delete"
    )
