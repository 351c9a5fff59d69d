"""Per-class score thresholds: for each class, the score at which its F1 on the val split is highest.

One rule for both tasks. A class's candidates are scored items (a detection of the class; for a
classifier, every image with its probability of the class, one-vs-rest), each either a hit or not,
against the number of true items of the class. Keeping the items scoring >= t gives
``F1(t) = 2 TP(t) / (kept(t) + positives)``; every distinct score is a candidate t, and among equal
F1 the highest t wins (fewer kept items for the same F1). A class with no positives or no scored
items gets ``None``: nothing to choose from, so the run's single threshold applies to it.

Detection hits come from the same greedy matching the operating-point table uses (a detection's
match depends only on higher-scored detections, so one matching serves every threshold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChosenThreshold:
    threshold: float | None
    f1: float | None


def best_f1_threshold(scores: np.ndarray, hits: np.ndarray, positives: int) -> ChosenThreshold:
    """The F1-maximising threshold over ``scores`` [N] whose ``hits`` [N] bool are true positives."""
    scores, hits = np.asarray(scores, dtype=np.float64), np.asarray(hits, dtype=bool)
    if positives <= 0 or not len(scores):
        return ChosenThreshold(None, None)
    order = np.argsort(-scores, kind="mergesort")
    scores, hits = scores[order], hits[order]
    f1 = 2 * np.cumsum(hits) / (np.arange(1, len(scores) + 1) + positives)
    # Only the last of a run of equal scores is a real cut: a threshold keeps all of them or none.
    cut = np.append(scores[1:] != scores[:-1], True)
    best = np.flatnonzero(cut)[np.argmax(f1[cut])]
    return ChosenThreshold(float(scores[best]), float(f1[best]))


def classification_thresholds(probs: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict:
    """{class: ChosenThreshold} one-vs-rest on ``probs`` [N, C] and ``targets`` [N]."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets)
    return {
        name: best_f1_threshold(probs[:, c], targets == c, int((targets == c).sum()))
        for c, name in enumerate(classes)
    }


def per_class_array(chosen: dict[str, float | None], classes: list[str], default: float) -> np.ndarray:
    """[C] thresholds in class order, ``default`` where none was chosen."""
    values = [chosen.get(name) for name in classes]
    return np.array([default if v is None else float(v) for v in values], dtype=np.float64)
