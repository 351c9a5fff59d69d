"""`lanner review` for classifiers: class probabilities per image, then confident learning
(:func:`lanner.eval.label_issues.classification_issues`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from rich.console import Console

from lanner.config import TrainConfig
from lanner.data.images import image_size
from lanner.data.records import Dataset
from lanner.eval.label_issues import CLASSIFY_COLUMNS, LabelIssue, classification_issues
from lanner.tasks.classify.evaluate import classify_cached
from lanner.tasks.classify.setup import load_classification_data
from lanner.tasks.review_export import SUGGESTED, note

IMAGE_LABELS = {"labelme"}  # export formats with image-level labels (Labelme's flags)


class ClassifyReviewer:
    format = "csv"  # how a fold's training data is written (path, label, split)
    columns = CLASSIFY_COLUMNS

    def training_data(self, config: TrainConfig) -> Dataset:
        return load_classification_data(config)

    def predict(
        self, loaded, dataset: Dataset, classes: list[str], console: Console
    ) -> dict[str, np.ndarray]:
        """path -> [C] probabilities in ``classes``' order (a class the model lacks: 0)."""
        idx, probs = classify_cached(loaded, dataset, console)
        columns = np.array([loaded.classes.index(c) if c in loaded.classes else -1 for c in classes])
        mapped = np.where(columns >= 0, probs.numpy()[:, np.maximum(columns, 0)], 0.0)  # [N, C]
        return {str(dataset.records[i].path): mapped[n] for n, i in enumerate(idx)}

    def encode(self, probs: np.ndarray) -> list[float]:
        """One prediction as JSON (a fold's predictions.json)."""
        return [round(float(p), 6) for p in probs]

    def decode(self, saved: list[float]) -> np.ndarray:
        return np.asarray(saved, dtype=np.float64)

    def issues(self, dataset: Dataset, predictions: dict[str, np.ndarray]) -> list[LabelIssue]:
        records = [r for r in dataset.records if str(r.path) in predictions]
        probs = np.stack([predictions[str(r.path)] for r in records]) if records else np.zeros((0, 0))
        labels = np.array([r.label for r in records], dtype=np.int64)
        return classification_issues([str(r.path) for r in records], probs, labels, dataset.classes)

    def marked(self, dataset: Dataset, rows: dict[str, list[dict]], format: str) -> Dataset:
        """``dataset`` with each image's suggestion marked (:mod:`lanner.tasks.review_export`): in a
        format with image-level labels a note ``suggested:<class> (lanner: ...)`` (Labelme: an unchecked
        flag beside the class flags); elsewhere a detection dataset of whole-image boxes, the given
        class and ``suggested:<class>``."""
        marks = {path: f"{SUGGESTED}{r[0]['suggested']} ({note(r[0])})" for path, r in rows.items()}
        if format in IMAGE_LABELS:
            records = [_sized(replace(r, notes=[marks[str(r.path)]])) for r in dataset.records]
            return replace(dataset, records=records)
        return whole_image_boxes(dataset, rows)


def whole_image_boxes(dataset: Dataset, rows: dict[str, list[dict]]) -> Dataset:
    """Each image as two boxes over all of it: its given class and ``suggested:<class>`` (noted)."""
    suggested = sorted({r[0]["suggested"] for r in rows.values()})
    classes = [*dataset.classes, *(SUGGESTED + c for c in suggested)]
    records = []
    for record in dataset.records:
        row, record = rows[str(record.path)][0], _sized(record)
        records.append(
            replace(
                record,
                boxes=np.array([[0, 0, record.width, record.height]] * 2, np.float32),
                labels=np.array([record.label, classes.index(SUGGESTED + row["suggested"])], np.int64),
                iscrowd=np.zeros(2, bool),
                label=None,
                notes=["", note(row)],
            )
        )
    return replace(dataset, classes=classes, records=records, task="detect")


def _sized(record):
    """``record`` with its image's width and height (the annotation files state them)."""
    width, height = image_size(record.path)
    return replace(record, width=width, height=height)
