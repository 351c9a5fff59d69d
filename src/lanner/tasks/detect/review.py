"""`lanner review` for detectors: boxes per image (tiled when the run is), then the box rules of
:func:`lanner.eval.label_issues.detection_issues`."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from rich.console import Console

from lanner.config import TrainConfig
from lanner.data.detections import Detections
from lanner.data.records import Dataset
from lanner.eval.label_issues import DETECT_COLUMNS, LabelIssue, detection_issues
from lanner.tasks.detect.evaluate import predict_dataset
from lanner.tasks.detect.setup import load_detection_data
from lanner.tasks.detect.tiled import resolve_tiling
from lanner.tasks.review_export import REMOVE, SUGGESTED, note


def onto(det: Detections, model_classes: list[str], classes: list[str]) -> Detections:
    """``det``'s labels renumbered from the model's class list into ``classes`` (others dropped)."""
    index = np.array([classes.index(c) if c in classes else -1 for c in model_classes], dtype=np.int64)
    labels = index[det.labels] if len(det) else det.labels
    keep = labels >= 0
    return Detections(det.boxes[keep], det.scores[keep], labels[keep])


class DetectReviewer:
    format = "csv_boxes"  # how a fold's training data is written (one row per box, with its split)
    columns = DETECT_COLUMNS

    def training_data(self, config: TrainConfig) -> Dataset:
        return load_detection_data(config)

    def predict(
        self, loaded, dataset: Dataset, classes: list[str], console: Console
    ) -> dict[str, Detections]:
        """path -> the model's boxes, labelled in ``classes``' order."""
        kept, detections = predict_dataset(
            loaded, dataset, console, resolve_tiling(loaded.meta.get("tiling"))
        )
        return {
            str(r.path): onto(d, loaded.classes, classes)
            for r, d in zip(kept.records, detections, strict=True)
        }

    def encode(self, det: Detections) -> dict:
        """One prediction as JSON (a fold's predictions.json)."""
        return {
            "boxes": det.boxes.round(3).tolist(),
            "scores": det.scores.round(6).tolist(),
            "labels": det.labels.tolist(),
        }

    def decode(self, saved: dict) -> Detections:
        return Detections(saved["boxes"], saved["scores"], saved["labels"])

    def issues(self, dataset: Dataset, predictions: dict[str, Detections]) -> list[LabelIssue]:
        records = [r for r in dataset.records if str(r.path) in predictions]
        kept = Dataset(dataset.classes, records, "detect", dataset.root, dataset.format)
        return detection_issues(kept, [predictions[str(r.path)] for r in records])

    def marked(self, dataset: Dataset, rows: dict[str, list[dict]], format: str) -> Dataset:
        """``dataset``'s boxes as labelled plus one box per issue in ``rows`` (path -> label_issues.csv
        rows): the model's box in class ``suggested:<class>``, or ``suggested:(remove)`` over a box
        nothing was predicted near; each suggestion noted (:mod:`lanner.tasks.review_export`)."""
        classes, records = list(dataset.classes), []
        for record in dataset.records:
            found = [suggestion(row) for row in rows[str(record.path)]]
            classes += [name for name, _ in found if name not in classes]
            records.append(
                replace(
                    record,
                    boxes=np.concatenate(
                        [record.boxes, np.array([b for _, b in found], np.float32).reshape(-1, 4)]
                    ),
                    labels=np.concatenate([record.labels, [classes.index(n) for n, _ in found]]).astype(
                        np.int64
                    ),
                    iscrowd=np.concatenate([record.iscrowd, np.zeros(len(found), bool)]),
                    scores=None,
                    notes=[""] * record.num_boxes + [note(row) for row in rows[str(record.path)]],
                )
            )
        return replace(dataset, classes=classes, records=records)


def suggestion(row: dict) -> tuple[str, list[float]]:
    """(class, box) of the annotation that marks one detection issue."""
    if row["kind"] == "spurious_box":
        return REMOVE, [row[k] for k in ("x1", "y1", "x2", "y2")]
    return SUGGESTED + row["suggested"], [row[k] for k in ("sx1", "sy1", "sx2", "sy2")]
