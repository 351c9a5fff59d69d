"""The report's gallery for classifiers: mistakes first, most confident first."""

from __future__ import annotations

GALLERY_KEYS = ("gt_label", "pred_label", "score", "topk")


def classify_badness(r: dict) -> list[float]:
    """Sort key (bigger = worse): mistakes, most confident first; then correct ones, least confident first."""
    score = r.get("score")
    score = float(score) if isinstance(score, (int, float)) else 0.0
    wrong = r.get("pred_label") != r.get("gt_label")
    return [1.0, score] if wrong else [0.0, 1.0 - score]
