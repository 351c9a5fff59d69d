"""`lanner eval DET_RUN [DATA] --classify CLS_RUN`: the two-stage result scored against the ground truth
on the classifier's classes, beside the detector alone.

The detector alone is scored on the same images: on the same classes when it has the classifier's;
otherwise class-agnostically (every box one class), which says how well it finds the objects the
classifier then names. Both go to ``DET_RUN/two_stage/metrics.json`` (``detector_alone``).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
from rich.console import Console

from lanner._io import write_json
from lanner.config import InferenceOptions
from lanner.data.classes import onto_classes
from lanner.data.detections import Detections
from lanner.data.formats import read_dataset
from lanner.data.images import open_image
from lanner.data.records import Dataset, ImageRecord
from lanner.data.split import apply_saved_split, select_splits
from lanner.errors import DataError
from lanner.eval.detection import evaluate_detections, metric_thresholds, write_detection_outputs
from lanner.tasks.detect.evaluate import format_summary, predict_dataset
from lanner.tasks.detect.setup import load_detection_data
from lanner.tasks.detect.tiled import resolve_tiling
from lanner.tasks.two_stage.pipeline import Relabelled, TwoStage, relabel
from lanner.tasks.two_stage.predict import box_entry

HEADLINE = ("map", "map50", "map75", "mar_100")


def eval_data(pipeline: TwoStage, data: str | None, split: str | None, options: InferenceOptions, console):
    """(the images, on the classifier's classes; the split): the detector's own data and split, or DATA."""
    det = pipeline.detector
    if data is None:
        dataset = load_detection_data(det.config)
        apply_saved_split(dataset, det.run.split)
    else:
        dataset = read_dataset(data, allow_outside_root=options.allow_outside_root)
        if dataset.task != "detect":
            raise DataError(f"{data}: a {dataset.task} dataset; the two-stage pipeline is scored on boxes")
    dataset, dropped = onto_classes(dataset, pipeline.classes)
    if dropped:
        console.print(f"[yellow]note[/]: class(es) {', '.join(dropped)} unknown to the classifier; "
                      "their boxes are left out of the evaluation")  # fmt: skip
    subset, split = select_splits(dataset, split)
    if not subset.records:
        raise DataError(f"{data or det.config.data}: no images in split {split!r} (splits: {dataset.splits})")
    return subset, split


def _agnostic(dataset: Dataset, detections: list[Detections]) -> tuple[Dataset, list[Detections]]:
    """Every box of one class "object": how well boxes are found, whatever their class."""
    records = [
        ImageRecord(r.path, r.width, r.height, boxes=r.boxes, labels=np.zeros(len(r.labels), np.int64),
                    iscrowd=r.iscrowd, ignore=r.ignore, split=r.split)
        for r in dataset.records
    ]  # fmt: skip
    one = [Detections(d.boxes, d.scores, np.zeros(len(d), np.int64)) for d in detections]
    return Dataset(["object"], records, "detect", dataset.root, dataset.format), one


def detector_alone(pipeline: TwoStage, dataset: Dataset, detections: list, threshold: float) -> dict:
    """The detector's headline metrics on the same images (class-agnostic when its classes differ)."""
    same = pipeline.detector.classes == pipeline.classes
    scored = (dataset, detections) if same else _agnostic(dataset, detections)
    metrics = evaluate_detections(*scored, score_threshold=threshold)
    return {**{k: metrics[k] for k in HEADLINE}, "class_agnostic": not same,
            "classes": pipeline.detector.classes}  # fmt: skip


def _relabel_all(pipeline: TwoStage, dataset: Dataset, detections: list[Detections]) -> list[Relabelled]:
    pairs = zip(dataset.records, detections, strict=True)
    return [relabel(pipeline, open_image(r.path), d) for r, d in pairs]


def _add_scores(pipeline: TwoStage, metrics: dict, relabelled: list[Relabelled]) -> None:
    """eval/predictions.json: each shown box's det/cls scores beside (the report's gallery draws them)."""
    path = pipeline.run.eval_predictions
    document = json.loads(path.read_text())
    thresholds = metric_thresholds(metrics)
    for image, r in zip(document["images"], relabelled, strict=True):
        entry = box_entry(pipeline, r.above(thresholds))
        image["pred_det_scores"], image["pred_cls_scores"] = entry["det_scores"], entry["cls_scores"]
    write_json(path, document)


def _write(pipeline: TwoStage, metrics: dict, dataset: Dataset, relabelled: list[Relabelled]) -> None:
    run = pipeline.run
    write_detection_outputs(metrics, dataset, [r.det for r in relabelled], run.eval)
    _add_scores(pipeline, metrics, relabelled)
    write_json(run.metrics, metrics)
    if pipeline.detector.run.config.is_file():  # the report finds the images through the data it names
        shutil.copyfile(pipeline.detector.run.config, run.config)
    headline = {k: metrics[k] for k in HEADLINE}
    pipeline.record({"metrics": headline, "detector_alone": metrics["detector_alone"]})


def evaluate_two_stage(
    pipeline: TwoStage, data: str | None, split: str | None, options: InferenceOptions, console: Console
) -> dict:
    """COCO metrics of the re-labelled boxes (score = det_score * cls_score) beside the detector alone."""
    console.print(pipeline.describe())
    dataset, split = eval_data(pipeline, data, split, options, console)
    det = pipeline.detector
    tiling = resolve_tiling(det.meta.get("tiling"), **options.tiling_overrides())
    dataset, detections = predict_dataset(det, dataset, console, tiling, options.tta)
    relabelled = _relabel_all(pipeline, dataset, detections)
    threshold = det.config.score_threshold if options.score_threshold is None else options.score_threshold
    metrics = evaluate_detections(dataset, [r.det for r in relabelled], score_threshold=threshold)
    metrics = {**metrics, "split": split, "two_stage": {"detector": str(det.run.path),
               "classifier": str(pipeline.classifier.run.path), "pad": pipeline.pad},
               "detector_alone": detector_alone(pipeline, dataset, detections, threshold)}  # fmt: skip
    _write(pipeline, metrics, dataset, relabelled)
    console.print(f"evaluation on split {split or 'all'} ({len(dataset.records)} images), two-stage:")
    console.print(format_summary(metrics), markup=False, highlight=False)
    alone = metrics["detector_alone"]
    kind = "class-agnostic, its classes differ" if alone["class_agnostic"] else "same classes"
    console.print(f"detector alone ({kind}): mAP@.5:.95 {_fmt(alone['map'])}  mAP@.5 {_fmt(alone['map50'])}; "
                  f"two-stage: mAP@.5:.95 {_fmt(metrics['map'])}  mAP@.5 {_fmt(metrics['map50'])}",
                  highlight=False)  # fmt: skip
    return metrics


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
