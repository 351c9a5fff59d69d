"""`lanner eval` for classifiers: metrics of a trained run on a split of its data or on another dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from lanner.config import InferenceOptions
from lanner.data.cache import build_cache, default_cache_dir
from lanner.data.pixels import Preprocessing
from lanner.data.records import Dataset
from lanner.eval.classification import classification_metrics, format_report, write_classification_outputs
from lanner.eval.thresholds import classification_thresholds
from lanner.predict.tta import class_probs
from lanner.tasks.classify.setup import load_classification_data
from lanner.tasks.eval_data import load_eval_data
from lanner.tasks.loading import LoadedRun
from lanner.tasks.run_thresholds import class_thresholds
from lanner.tasks.sharing import gather_shares, part_of, print_skipped_elsewhere


@torch.no_grad()
def classify_cached(loaded: LoadedRun, dataset: Dataset, console: Console, tta: bool = False):
    """(indices of the readable images, their probabilities [N, C]); the unreadable ones are printed."""
    idx, probs, skipped = _classify(loaded, dataset, tta)
    for text in skipped:
        console.print(f"[yellow]skipped[/] {text}")
    return idx, probs


@torch.no_grad()
def _classify(loaded: LoadedRun, dataset: Dataset, tta: bool):
    """(indices of the readable images, probabilities [N, C], "path: problem" of the unreadable ones)."""
    prep = Preprocessing.from_dict(loaded.meta.get("preprocessing"))
    cache_dir = Path(loaded.config.cache_dir) if loaded.config.cache_dir else default_cache_dir()
    images, ok, issues = build_cache([Path(r.path) for r in dataset.records], prep.cache_size, cache_dir)
    idx = np.flatnonzero(ok)
    probs = []
    for start in range(0, len(idx), 64):
        chunk = idx[start : start + 64]
        probs.append(class_probs(loaded.model, images[chunk], prep, loaded.device, tta))
    probs = torch.cat(probs) if probs else torch.zeros(0, len(loaded.classes))
    return idx, probs, [f"{issue.path}: {issue.problem}" for issue in issues]


def prediction_items(records, probs: torch.Tensor, num_classes: int) -> list[dict]:
    """One eval/predictions.json entry per image: truth, prediction, top-k."""
    top = probs.topk(min(5, num_classes), dim=1)
    return [
        {
            "path": str(r.path),
            "gt_label": int(r.label),
            "pred_label": int(top.indices[i, 0]),
            "score": float(top.values[i, 0]),
            "topk": [
                [int(c), round(float(s), 5)] for c, s in zip(top.indices[i], top.values[i], strict=True)
            ],
        }
        for i, r in enumerate(records)
    ]


def _combined_probs(members: list[LoadedRun], weights: list[float], dataset: Dataset, console: Console,
                    tta: bool = False):  # fmt: skip
    """(indices of the images every member read, weighted mean probabilities [N, C], each member's,
    the unreadable images as "path: problem")."""
    results = [_classify(m, dataset, tta) for m in members]
    idx = results[0][0]
    for other, _, _ in results[1:]:
        idx = np.intersect1d(idx, other)
    skipped = list(dict.fromkeys(text for _, _, texts in results for text in texts))
    for text in skipped:
        console.print(f"[yellow]skipped[/] {text}")
    each = [probs[np.isin(i, idx)] for i, probs, _ in results]
    return idx, sum(w * p for w, p in zip(weights, each, strict=True)), each, skipped


def _shared_probs(members: list[LoadedRun], weights: list[float], dataset: Dataset, console: Console,
                  tta: bool):  # fmt: skip
    """:func:`_combined_probs` of this process's part of the images, every part gathered in order on
    process 0: (the records read, mean probabilities [N, C], each member's); None on the others."""
    part = members[0].part
    mine = part_of(dataset, part)
    idx, probs, each, skipped = _combined_probs(members, weights, mine, console, tta)
    shares = gather_shares(part, ([mine.records[i] for i in idx], probs, each, skipped))
    if shares is None:
        return None
    print_skipped_elsewhere(console, [share[3] for share in shares])
    records = [r for share in shares for r in share[0]]
    each = [torch.cat(member) for member in zip(*(share[2] for share in shares), strict=True)]
    return records, torch.cat([share[1] for share in shares]), each


def _val_chooser(loaded: LoadedRun, data, evaluated, console: Console):
    """How to choose per-class thresholds on the run's val split (None for another dataset):
    on ``evaluated`` (probs, targets) when that is val, else by classifying val now."""
    if data is not None:
        return None
    if evaluated is not None:
        return lambda: classification_thresholds(*evaluated, loaded.classes)

    def choose():
        val, _ = load_eval_data(loaded, None, "val", load_classification_data, console)
        idx, probs = classify_cached(loaded, val, console)
        targets = np.array([val.records[i].label for i in idx])
        return classification_thresholds(probs.numpy(), targets, loaded.classes)

    return choose


def _thresholds(members, data, split, evaluated, options: InferenceOptions, console: Console):
    """Per-class thresholds of a single run (see run_thresholds); an ensemble has none of its own."""
    if len(members) > 1:
        return None
    on_val = data is None and split == "val"
    chooser = _val_chooser(members[0], data, evaluated if on_val else None, console)
    return class_thresholds(members[0], options.score_threshold, 0.0, chooser, on_val=on_val)


def _evaluate(members, weights, run, data, split, console, options) -> tuple[dict, list]:
    """Metrics of the members' weighted mean probabilities (one member: the run's own), written to ``run``."""
    dataset, split = load_eval_data(
        members[0], data, split, load_classification_data, console, options.allow_outside_root
    )
    shared = _shared_probs(members, weights, dataset, console, options.tta)
    if shared is None:  # another process: process 0 scores and writes
        return {}, []
    records, probs, each = shared
    targets = torch.tensor([r.label for r in records])
    thresholds = _thresholds(members, data, split, (probs.numpy(), targets.numpy()), options, console)
    metrics = {**classification_metrics(probs, targets, members[0].classes, thresholds), "tta": options.tta}
    items = prediction_items(records, probs, len(members[0].classes))
    write_classification_outputs(metrics, items, run, split)
    console.print(
        f"evaluation on split {split or 'all'} ({len(records)} images) with {members[0].checkpoint.name}:"
    )
    console.print(format_report(metrics), markup=False, highlight=False)
    headlines = [classification_metrics(p, targets, members[0].classes)["accuracy"] for p in each]
    return {**metrics, "split": split}, headlines


def evaluate_classification(
    loaded: LoadedRun, data, split, console: Console, options: InferenceOptions
) -> dict:
    return _evaluate([loaded], [1.0], loaded.run, data, split, console, options)[0]


def evaluate_classification_ensemble(
    ensemble, data, split, console: Console, options: InferenceOptions
) -> dict:
    """The ensemble's metrics in RUN1/ensemble, with each member's accuracy on the same images."""
    console.print(ensemble.describe())
    metrics, headlines = _evaluate(
        ensemble.members, ensemble.weights, ensemble.run, data, split, console, options
    )
    if not metrics:  # another process than 0 (--devices N)
        return {}
    by_run = {str(m.run.path): a for m, a in zip(ensemble.members, headlines, strict=True)}
    for run, accuracy in by_run.items():
        console.print(f"  member {run}: accuracy {accuracy:.4f}", highlight=False)
    console.print(f"  ensemble: accuracy {metrics['accuracy']:.4f}", highlight=False)
    ensemble.record(by_run)
    return {**metrics, "members": by_run}
