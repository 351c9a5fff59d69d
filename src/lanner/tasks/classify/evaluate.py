"""`lanner eval` for classifiers: metrics of a trained run on a split of its data or on another dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from lanner.config import InferenceOptions
from lanner.data.cache import build_cache, default_cache_dir
from lanner.data.pixels import Preprocessing, eval_batch
from lanner.data.records import Dataset
from lanner.eval.classification import classification_metrics, format_report, write_classification_outputs
from lanner.eval.thresholds import classification_thresholds
from lanner.tasks.classify.setup import load_classification_data
from lanner.tasks.eval_data import load_eval_data
from lanner.tasks.loading import LoadedRun
from lanner.tasks.run_thresholds import class_thresholds


@torch.no_grad()
def _classify_cached(loaded: LoadedRun, dataset: Dataset, console: Console):
    prep = Preprocessing.from_dict(loaded.meta.get("preprocessing"))
    cache_dir = Path(loaded.config.cache_dir) if loaded.config.cache_dir else default_cache_dir()
    images, ok, issues = build_cache([Path(r.path) for r in dataset.records], prep.cache_size, cache_dir)
    for issue in issues:
        console.print(f"[yellow]skipped[/] {issue.path}: {issue.problem}")
    idx = np.flatnonzero(ok)
    probs = []
    for start in range(0, len(idx), 64):
        chunk = idx[start : start + 64]
        probs.append(loaded.model(eval_batch(images[chunk], prep, loaded.device)).float().softmax(1).cpu())
    return idx, torch.cat(probs) if probs else torch.zeros(0, len(loaded.classes))


def _prediction_items(records, probs: torch.Tensor, num_classes: int) -> list[dict]:
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


def _val_chooser(loaded: LoadedRun, data, evaluated, console: Console):
    """How to choose per-class thresholds on the run's val split (None for another dataset):
    on ``evaluated`` (probs, targets) when that is val, else by classifying val now."""
    if data is not None:
        return None
    if evaluated is not None:
        return lambda: classification_thresholds(*evaluated, loaded.classes)

    def choose():
        val, _ = load_eval_data(loaded, None, "val", load_classification_data, console)
        idx, probs = _classify_cached(loaded, val, console)
        targets = np.array([val.records[i].label for i in idx])
        return classification_thresholds(probs.numpy(), targets, loaded.classes)

    return choose


def evaluate_classification(
    loaded: LoadedRun, data, split, console: Console, options: InferenceOptions
) -> dict:
    dataset, split = load_eval_data(
        loaded, data, split, load_classification_data, console, options.allow_outside_root
    )
    idx, probs = _classify_cached(loaded, dataset, console)
    records = [dataset.records[i] for i in idx]
    targets = torch.tensor([r.label for r in records])
    on_val = data is None and split == "val"
    chooser = _val_chooser(loaded, data, (probs.numpy(), targets.numpy()) if on_val else None, console)
    thresholds = class_thresholds(loaded, options.score_threshold, 0.0, chooser, on_val=on_val)
    metrics = classification_metrics(probs, targets, loaded.classes, thresholds)
    items = _prediction_items(records, probs, len(loaded.classes))
    write_classification_outputs(metrics, items, loaded.run, split)
    console.print(
        f"evaluation on split {split or 'all'} ({len(records)} images) with {loaded.checkpoint.name}:"
    )
    console.print(format_report(metrics), markup=False, highlight=False)
    return {**metrics, "split": split}
