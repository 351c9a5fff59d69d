"""`lanner eval RUN [DATA]`: metrics of a trained run on a split of its data or on another dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from lanner.data.records import Dataset, canonical_split
from lanner.errors import DataError
from lanner.models.loading import LoadedRun, describe_inference, load_for_inference
from lanner.tasks.classify import Preprocessing, eval_batch


def default_split(dataset: Dataset) -> str | None:
    """The split named test, else val; None (all images) when the data has no splits."""
    splits = set(dataset.splits)
    return next((s for s in ("test", "val") if s in splits), None)


def _map_classes(dataset: Dataset, classes: list[str]) -> Dataset:
    """Re-index a dataset's labels onto the run's class list, by name."""
    missing = [c for c in dataset.classes if c not in classes]
    if missing:
        raise DataError(
            f"{dataset.root}: class(es) {', '.join(missing)} unknown to this model "
            f"(it knows: {', '.join(classes)})"
        )
    index = [classes.index(c) for c in dataset.classes]
    for r in dataset.records:
        if r.label is not None:
            r.label = index[r.label]
    return Dataset(list(classes), dataset.records, dataset.task, dataset.root, dataset.format, dataset.issues)


def load_eval_data(
    loaded: LoadedRun, run_dir: Path, data: str | None, split: str | None
) -> tuple[Dataset, str | None]:
    from lanner.data.formats import read_dataset
    from lanner.data.split import apply_saved_split
    from lanner.tasks.classify_setup import load_classification_data

    if data is None:
        dataset = load_classification_data(loaded.config)
        apply_saved_split(dataset, run_dir)
    else:
        dataset = _map_classes(read_dataset(data), loaded.classes)
    split = canonical_split(split) or default_split(dataset)
    subset = dataset.subset(split)
    if not subset.records:
        raise DataError(
            f"{data or loaded.config.data}: no images in split {split!r} (splits: {dataset.splits})"
        )
    return subset, split


@torch.no_grad()
def _classify_cached(loaded: LoadedRun, dataset: Dataset, console: Console):
    from lanner.data.cache import build_cache, default_cache_dir

    prep = Preprocessing.from_dict(loaded.meta["preprocessing"])
    cache_dir = Path(loaded.config.cache_dir) if loaded.config.cache_dir else default_cache_dir()
    images, ok, issues = build_cache([Path(r.path) for r in dataset.records], prep.cache_size, cache_dir)
    for issue in issues:
        console.print(f"[yellow]skipped[/] {issue.path}: {issue.problem}")
    idx = np.flatnonzero(ok)
    probs = []
    for start in range(0, len(idx), 64):
        chunk = idx[start : start + 64]
        probs.append(loaded.model(eval_batch(images[chunk], prep, loaded.device)).float().softmax(1).cpu())
    return idx, torch.cat(probs)


def evaluate_classification(loaded: LoadedRun, run_dir: Path, data, split, console: Console) -> dict:
    from lanner.eval.classification import classification_metrics, format_report, write_classification_outputs

    dataset, split = load_eval_data(loaded, run_dir, data, split)
    idx, probs = _classify_cached(loaded, dataset, console)
    records = [dataset.records[i] for i in idx]
    targets = torch.tensor([r.label for r in records])
    metrics = classification_metrics(probs, targets, loaded.classes)
    k = min(5, len(loaded.classes))
    top = probs.topk(k, dim=1)
    items = [
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
    write_classification_outputs(metrics, items, run_dir / "eval", run_dir, split)
    console.print(
        f"evaluation on split {split or 'all'} ({len(records)} images) with {loaded.checkpoint.name}:"
    )
    console.print(format_report(metrics), markup=False, highlight=False)
    return {**metrics, "split": split}


def evaluate_run(
    run_dir: Path,
    data: str | None,
    split: str | None,
    console: Console,
    device: str = "auto",
    precision: str = "auto",
    **detect_options,
) -> dict:
    """Evaluate a run; ``detect_options`` (tile, overlap) override a detection run's tiling."""
    loaded = load_for_inference(run_dir, device, precision)
    console.print(describe_inference(loaded))
    if loaded.meta["task"] == "detect":
        from lanner.tasks.detect_setup import evaluate_detection_run

        return evaluate_detection_run(loaded, run_dir, data, split, console, **detect_options)
    return evaluate_classification(loaded, run_dir, data, split, console)
