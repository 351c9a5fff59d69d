"""Per-class score thresholds: chosen for the best F1 on constructed cases whose answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lanner.data.detections import Detections
from lanner.data.records import Dataset, ImageRecord
from lanner.eval.detection import detection_thresholds, evaluate_detections
from lanner.eval.thresholds import best_f1_threshold, classification_thresholds


def test_best_f1_threshold_by_hand():
    # 3 positives; kept top-k F1: .5, .8, .667, .571, .75 -> keep the top two, threshold 0.8
    chosen = best_f1_threshold(np.array([0.5, 0.9, 0.6, 0.8, 0.7]), np.array([1, 1, 0, 1, 0], bool), 3)
    assert chosen.threshold == 0.8 and chosen.f1 == pytest.approx(0.8)


def test_tied_scores_are_one_cut_and_nothing_to_choose_is_none():
    # a hit and a miss tied at 0.9: a threshold keeps both or neither (F1 2/4, then 4/5 with 0.5)
    chosen = best_f1_threshold(np.array([0.9, 0.9, 0.5]), np.array([1, 0, 1], bool), 2)
    assert chosen.threshold == 0.5 and chosen.f1 == pytest.approx(0.8)
    assert best_f1_threshold(np.array([0.3]), np.array([False]), 0).threshold is None
    assert best_f1_threshold(np.zeros(0), np.zeros(0, bool), 4).threshold is None


def test_classification_thresholds_one_vs_rest():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.2, 0.8], [0.3, 0.7]])
    targets = np.array([0, 0, 1, 1, 1])
    chosen = classification_thresholds(probs, targets, ["a", "b"])
    # class a: scores .9 .6 (hits) .55 (miss) -> keep two, F1 1; class b: .8 .7 hits, .45 hit -> all
    assert chosen["a"].threshold == 0.6 and chosen["a"].f1 == pytest.approx(1.0)
    assert chosen["b"].threshold == 0.45 and chosen["b"].f1 == pytest.approx(1.0)


def _box(x: float) -> list[float]:
    return [x, 10.0, x + 20.0, 30.0]


def test_detection_thresholds_known_per_class_and_used_by_the_table():
    # class a: 2 boxes, hits at .9 and .6, a background FP at .7 -> F1 .667, .5, .8: threshold .6
    # class b: 1 box, hit at .4, FP at .3 (on the a box: not a b hit) -> threshold .4
    record = ImageRecord(
        Path("x.png"), 200, 100, boxes=np.array([_box(0), _box(50), _box(100)]), labels=np.array([0, 0, 1])
    )
    det = Detections(
        np.array([_box(0), _box(150), _box(50), _box(100), _box(1)]),
        np.array([0.9, 0.7, 0.6, 0.4, 0.3]),
        np.array([0, 0, 0, 1, 1]),
    )
    dataset = Dataset(["a", "b"], [record], "detect")
    chosen = detection_thresholds(dataset, [det])
    assert chosen["a"].threshold == 0.6 and chosen["a"].f1 == pytest.approx(0.8)
    assert chosen["b"].threshold == 0.4 and chosen["b"].f1 == pytest.approx(1.0)
    thresholds = np.array([chosen["a"].threshold, chosen["b"].threshold])
    metrics = evaluate_detections(dataset, [det], score_threshold=0.25, class_thresholds=thresholds)
    a, b = metrics["per_class"]["a"], metrics["per_class"]["b"]
    assert (a["threshold"], a["tp"], a["fp"], a["misses"]) == (0.6, 2, 1, 0)
    assert (b["threshold"], b["tp"], b["fp"], b["misses"]) == (0.4, 1, 0, 0)
    single = evaluate_detections(dataset, [det], score_threshold=0.25)["per_class"]["b"]
    assert (single["threshold"], single["fp"]) == (0.25, 1)  # one threshold for all: b's FP at .3 counts
