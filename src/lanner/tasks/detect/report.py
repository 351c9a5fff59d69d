"""The report's gallery for detectors: boxes matched to the ground truth, images with most errors first."""

from __future__ import annotations

import numpy as np

from lanner.data.geometry import box_iou

IOU_MATCH = 0.5  # the IoU at which the gallery calls a prediction a hit (COCO's AP50 matching)
GALLERY_KEYS = (
    "gt_boxes", "gt_labels", "pred_boxes", "pred_labels", "pred_scores", "pred_match", "pred_wrong",
    "gt_hit_score", "pred_det_scores", "pred_cls_scores",  # the last two: detect-then-classify only
)  # fmt: skip


def match_detections(r: dict, iou: float = IOU_MATCH) -> dict[str, list]:
    """Greedy matching in descending score order (COCO style), valid at every score threshold at once.

    Because a prediction's match depends only on higher-scored predictions, the matches at threshold t
    are exactly the matches of the predictions scoring >= t. Returns per prediction ``pred_match`` (gt
    index or -1) and ``pred_wrong`` (for an unmatched prediction, the gt index of another class it
    overlaps with IoU >= ``iou``, else -1), and per ground-truth box ``gt_hit_score`` (score of the
    prediction that found it, or null: a gt box counts as missed at threshold t when that is < t).
    """
    gt_boxes, gt_labels = list(r.get("gt_boxes") or []), list(r.get("gt_labels") or [])
    boxes, labels = list(r.get("pred_boxes") or []), list(r.get("pred_labels") or [])
    scores = list(r.get("pred_scores") or [1.0] * len(boxes))
    overlaps = box_iou(np.array(boxes, dtype=np.float64), np.array(gt_boxes, dtype=np.float64))  # [P, G]
    pred_match, pred_wrong = [-1] * len(boxes), [-1] * len(boxes)
    gt_hit: list[float | None] = [None] * len(gt_boxes)
    for p in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        best, best_iou, other, other_iou = -1, iou, -1, iou
        for g, overlap in enumerate(overlaps[p]):
            if gt_labels[g] == labels[p]:
                if gt_hit[g] is None and overlap >= best_iou:
                    best, best_iou = g, overlap
            elif overlap >= other_iou:
                other, other_iou = g, overlap
        if best >= 0:
            pred_match[p], gt_hit[best] = best, scores[p]
        else:
            pred_wrong[p] = other
    return {"pred_match": pred_match, "pred_wrong": pred_wrong, "gt_hit_score": gt_hit}


def detect_badness(r: dict, threshold: float) -> list[float]:
    """Sort key (bigger = worse): [errors at threshold, highest score among the wrong predictions]."""
    scores = list(r.get("pred_scores") or [1.0] * len(r["pred_match"]))
    wrong = [s for s, m in zip(scores, r["pred_match"], strict=False) if m < 0 and s >= threshold]
    misses = sum(1 for s in r["gt_hit_score"] if s is None or s < threshold)
    return [len(wrong) + misses, max(wrong, default=0.0)]
