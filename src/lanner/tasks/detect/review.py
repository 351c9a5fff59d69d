"""`lanner review` for detectors: boxes per image (tiled when the run is), then the box rules of
:func:`lanner.eval.label_issues.detection_issues`."""

from __future__ import annotations

import numpy as np
from rich.console import Console

from lanner.config import TrainConfig
from lanner.data.detections import Detections
from lanner.data.records import Dataset
from lanner.eval.label_issues import DETECT_COLUMNS, LabelIssue, detection_issues
from lanner.tasks.detect.evaluate import predict_dataset
from lanner.tasks.detect.setup import load_detection_data
from lanner.tasks.detect.tiled import resolve_tiling


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

    def issues(self, dataset: Dataset, predictions: dict[str, Detections]) -> list[LabelIssue]:
        records = [r for r in dataset.records if str(r.path) in predictions]
        kept = Dataset(dataset.classes, records, "detect", dataset.root, dataset.format)
        return detection_issues(kept, [predictions[str(r.path)] for r in records])
