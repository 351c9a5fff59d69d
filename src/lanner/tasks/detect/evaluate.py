"""`lanner eval` for detectors: COCO metrics of a trained run, on whole images or tile by tile."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from rich.console import Console

from lanner._io import write_json
from lanner.config import InferenceOptions
from lanner.data.records import Dataset
from lanner.engine.setup import default_workers
from lanner.eval.detection import detection_thresholds, evaluate_detections, write_detection_outputs
from lanner.eval.error_breakdown import KINDS, error_breakdown
from lanner.predict.merge import fuse_models
from lanner.tasks.detect.setup import cache_dataset, load_detection_data
from lanner.tasks.detect.tiled import detect_tiled, resolve_tiling
from lanner.tasks.detect.training import detect_canvases_tta
from lanner.tasks.eval_data import load_eval_data
from lanner.tasks.loading import LoadedRun
from lanner.tasks.run_thresholds import class_thresholds
from lanner.tasks.sharing import gather_shares, part_of, print_skipped_elsewhere


def predict_dataset(
    loaded: LoadedRun, dataset: Dataset, console: Console, tiling=None, tta: bool = False
) -> tuple[Dataset, list]:
    """Detections for every readable image of ``dataset`` (unreadable ones are dropped from it).

    With ``tiling`` the full images go through tiled inference; without, each image is letterboxed
    (downscaled) to the model's input size; ``tta``: see :mod:`lanner.predict.tta`.
    """
    if tiling is not None:
        tiling = tiling.for_device(loaded.model, loaded.device)
        console.print(
            f"tiled inference: {tiling.tile} px tiles, overlap {tiling.overlap:g}, merge {tiling.merge}, "
            f"{tiling.batch_size} tiles per batch"
        )
        return dataset, detect_tiled(loaded.model, dataset.records, tiling, loaded.device, tta=tta)
    config = loaded.config
    cache = cache_dataset(
        dataset,
        int(loaded.meta.get("image_size")),
        config.cache_dir,
        config.workers or default_workers(),
        console,
    )
    ok = np.flatnonzero(cache.ok)
    detections = detect_canvases_tta(loaded.model, cache.images[ok], cache.sizes[ok], loaded.device, tta)
    kept = Dataset(
        dataset.classes,
        [dataset.records[i] for i in ok],
        "detect",
        dataset.root,
        dataset.format,
        dataset.issues,
    )
    return kept, detections


def format_summary(metrics: dict) -> str:
    def fmt(v) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    lines = [
        f"mAP@.5:.95 {fmt(metrics['map'])}  mAP@.5 {fmt(metrics['map50'])}  mAP@.75 {fmt(metrics['map75'])}  "
        f"AR@100 {fmt(metrics['mar_100'])}",
        f"{'class':<20} {'AP':>7} {'AP50':>7} {'P':>7} {'R':>7} {'F1':>7} {'boxes':>7} {'score>=':>7}   "
        "(P/R/F1 at each class's score threshold)",
    ]
    for name, c in metrics["per_class"].items():
        lines.append(
            f"{name:<20} {fmt(c.get('ap')):>7} {fmt(c.get('ap50')):>7} {fmt(c.get('precision')):>7} "
            f"{fmt(c.get('recall')):>7} {fmt(c.get('f1')):>7} {c.get('support', 0):>7} "
            f"{fmt(c.get('threshold', metrics['score_threshold'])):>7}"
        )
    return "\n".join(lines + _error_lines(metrics.get("errors")))


def _error_lines(errors: dict | None) -> list[str]:
    """The TIDE breakdown: what fixing each kind of error would add to mAP@.5 (and mAP), and counts."""
    if not errors:
        return []
    head = f"{'errors (TIDE)':<20} " + " ".join(f"{k[:8]:>8}" for k in KINDS)
    rows = [
        ("mAP@.5 +", " ".join(f"{errors['dap50'][k]:8.4f}" for k in KINDS)),
        ("mAP +", " ".join(f"{errors['dap'][k]:8.4f}" for k in KINDS)),
        ("count", " ".join(f"{errors['counts'][k]:8d}" for k in KINDS)),
    ]
    note = "(how much each metric would rise with that kind of error fixed; counts over all predictions)"
    return ["", head, *(f"{name:<20} {values}" for name, values in rows), note]


def _val_chooser(loaded: LoadedRun, data, evaluated, tiling, console: Console):
    """How to choose per-class thresholds on the run's val split (None for another dataset):
    on ``evaluated`` (dataset, detections) when that is val, else by predicting val now."""
    if data is not None:
        return None
    if evaluated is not None:
        return lambda: detection_thresholds(*evaluated)

    def choose():
        val, _ = load_eval_data(loaded, None, "val", load_detection_data, console)
        console.print("choosing per-class score thresholds on the val split")
        return detection_thresholds(*predict_dataset(loaded, val, console, tiling))

    return choose


def evaluate_detection_run(
    loaded: LoadedRun, data: str | None, split: str | None, options: InferenceOptions, console: Console
) -> dict:
    """COCO metrics of a detection run; the options' tile/overlap/merge/... override its tiling."""
    return _evaluate([loaded], [1.0], loaded.run, data, split, options, console)[0]


def evaluate_detection_ensemble(ensemble, data, split, options: InferenceOptions, console: Console) -> dict:
    """COCO metrics of the members' boxes fused by WBF (RUN1/ensemble), with each member's mAP beside."""
    console.print(ensemble.describe())
    metrics, headlines = _evaluate(
        ensemble.members, ensemble.weights, ensemble.run, data, split, options, console
    )
    if not metrics:  # another process than 0 (--devices N)
        return {}
    by_run = {str(m.run.path): h for m, h in zip(ensemble.members, headlines, strict=True)}
    for run, value in by_run.items():
        console.print(
            f"  member {run}: mAP@.5:.95 {value if value is None else round(value, 4)}", highlight=False
        )
    console.print(
        f"  ensemble: mAP@.5:.95 {metrics['map'] if metrics['map'] is None else round(metrics['map'], 4)}"
    )
    ensemble.record(by_run)
    return {**metrics, "members": by_run}


def _member_predictions(members, dataset: Dataset, options: InferenceOptions, console: Console):
    """(the images every member read, each member's detections on them, the first member's tiling,
    the images left out as "path: problem")."""
    outputs, tilings = [], []
    for loaded in members:
        tilings.append(resolve_tiling(loaded.meta.get("tiling"), **options.tiling_overrides()))
        kept, detections = predict_dataset(loaded, dataset, console, tilings[-1], options.tta)
        outputs.append(dict(zip((str(r.path) for r in kept.records), detections, strict=True)))
    common = [r for r in dataset.records if all(str(r.path) in out for out in outputs)]
    kept = Dataset(dataset.classes, common, "detect", dataset.root, dataset.format, dataset.issues)
    read = {id(r) for r in common}
    left_out = [f"{r.path}: unreadable, left out" for r in dataset.records if id(r) not in read]
    return kept, [[out[str(r.path)] for r in common] for out in outputs], tilings[0], left_out


def _shared_predictions(members, dataset: Dataset, options: InferenceOptions, console: Console):
    """:func:`_member_predictions` of this process's part of the images, every part gathered in order
    on process 0: (the images read, each member's detections, the tiling); None on the others."""
    part = members[0].part
    kept, each, tiling, left_out = _member_predictions(members, part_of(dataset, part), options, console)
    shares = gather_shares(part, (kept.records, each, left_out))
    if shares is None:
        return None
    print_skipped_elsewhere(console, [share[2] for share in shares])
    records = [r for share in shares for r in share[0]]
    each = [[d for member in parts for d in member] for parts in zip(*(s[1] for s in shares), strict=True)]
    return replace(dataset, records=records), each, tiling


def _thresholds(members, data, split, evaluated, tiling, options: InferenceOptions, console: Console):
    """One run: its per-class thresholds (see run_thresholds); an ensemble: --score-threshold or none."""
    first = members[0]
    if len(members) > 1:
        given = options.score_threshold
        return None if given is None else np.full(len(first.classes), float(given))
    chooser = _val_chooser(first, data, evaluated if split == "val" else None, tiling, console)
    return class_thresholds(
        first,
        options.score_threshold,
        first.config.score_threshold,
        chooser,
        on_val=data is None and split == "val",
    )


def _evaluate(members, weights, run, data, split, options, console) -> tuple[dict, list]:
    first = members[0]
    dataset, split = load_eval_data(
        first, data, split, load_detection_data, console, options.allow_outside_root
    )
    shared = _shared_predictions(members, dataset, options, console)
    if shared is None:  # another process: process 0 scores and writes
        return {}, []
    dataset, each, tiling = shared
    detections = (
        each[0] if len(each) == 1 else [fuse_models(list(d), weights) for d in zip(*each, strict=True)]
    )
    thresholds = _thresholds(members, data, split, (dataset, detections), tiling, options, console)
    about = {"split": split, "tiling": tiling.to_dict() if tiling else None, "tta": options.tta}
    metrics = score_detections(first, run, dataset, detections, thresholds, about, console)
    if len(each) == 1:
        return metrics, [metrics["map"]]
    threshold = first.config.score_threshold
    return metrics, [evaluate_detections(dataset, d, score_threshold=threshold)["map"] for d in each]


def score_detections(
    first: LoadedRun, run, dataset: Dataset, detections: list, thresholds: np.ndarray | None, about: dict,
    console: Console,
) -> dict:  # fmt: skip
    """COCO metrics and the TIDE breakdown of ``detections`` on ``dataset``, with ``about`` (split,
    tiling, tta), written to the run (metrics.json, eval/) and printed: the end of every detection
    eval, whatever read the images."""
    threshold = first.config.score_threshold
    metrics = evaluate_detections(dataset, detections, score_threshold=threshold, class_thresholds=thresholds)
    metrics = {**metrics, **about, "errors": error_breakdown(dataset, detections)}
    write_detection_outputs(metrics, dataset, detections, run.eval)
    write_json(run.metrics, metrics)
    split = about.get("split")
    console.print(
        f"evaluation on split {split or 'all'} ({len(dataset.records)} images) with {first.checkpoint.name}:"
    )
    console.print(format_summary(metrics), markup=False, highlight=False)
    return metrics
