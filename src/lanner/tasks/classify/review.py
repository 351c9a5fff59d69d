"""`lanner review` for classifiers: class probabilities per image, then confident learning
(:func:`lanner.eval.label_issues.classification_issues`)."""

from __future__ import annotations

import numpy as np
from rich.console import Console

from lanner.config import TrainConfig
from lanner.data.records import Dataset
from lanner.eval.label_issues import CLASSIFY_COLUMNS, LabelIssue, classification_issues
from lanner.tasks.classify.evaluate import classify_cached
from lanner.tasks.classify.setup import load_classification_data


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

    def issues(self, dataset: Dataset, predictions: dict[str, np.ndarray]) -> list[LabelIssue]:
        records = [r for r in dataset.records if str(r.path) in predictions]
        probs = np.stack([predictions[str(r.path)] for r in records]) if records else np.zeros((0, 0))
        labels = np.array([r.label for r in records], dtype=np.int64)
        return classification_issues([str(r.path) for r in records], probs, labels, dataset.classes)
