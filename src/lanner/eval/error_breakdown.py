"""Why a detector loses AP: the TIDE error breakdown (Bolya et al., ECCV 2020).

Every prediction that is not a true positive at IoU ``t`` gets one kind, tested in TIDE's order
(IoU with ground truth of its class ``iou_cls``, of other classes ``iou_other``, background 0.1):

* ``localisation`` - 0.1 <= best ``iou_cls`` <= t: the right class, a poor box;
* ``classification`` - best ``iou_other`` >= t: a good box, the wrong class;
* ``duplicate`` - ``iou_cls`` >= t with a box another prediction already took;
* ``background`` - every IoU <= 0.1: a prediction on nothing;
* ``both`` - none of these (wrong class and poor box);
* ``missed`` - a ground-truth box no prediction found, nor any classification/localisation error
  points at.

The breakdown is how much AP would rise if one kind were fixed, all else kept: a localisation
error becomes a true positive of its class and a classification error one of its box's class (only
the highest-scored error per unmatched box; the others are dropped); a duplicate, background or
"both" prediction is dropped; a missed box leaves the ground truth. ``dAP = max(AP_fixed - AP, 0)``.

AP here is TIDE's, so the numbers can be compared with the ``tidecv`` package (a test does):
101-point interpolated AP per class, averaged over every class with ground truth *or* predictions
(a class with predictions and no ground truth counts as AP 0, where COCO leaves it out), at most
100 predictions per image. Matching, crowd boxes and ignore regions are lanner's own
(:mod:`lanner.eval.detection`; greedy by score, a prediction inside a crowd box or ignore region is
neither a hit nor an error). ``map50`` is at IoU .5; ``map`` averages each kind's dAP over IoU
.50:.95, as mAP averages AP. Counts are of the IoU-.5 run, over all predictions (no score threshold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lanner.data.detections import Detections
from lanner.data.geometry import box_iou
from lanner.data.records import Dataset, ImageRecord
from lanner.eval.detection import crowd_flags, greedy_match, ignored_detections

KINDS = ("classification", "localisation", "both", "duplicate", "background", "missed")
TP, CLS, LOC, BOTH, DUPE, BKG = 0, 1, 2, 3, 4, 5  # a prediction's kind (KINDS index + 1; TP first)
BACKGROUND_IOU = 0.1
MAX_DETS = 100
COCO_IOUS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))


@dataclass
class Outcome:
    """Every counted prediction of a dataset at one IoU, and the missed ground truth."""

    score: np.ndarray  # [P] float
    label: np.ndarray  # [P] predicted class
    kind: np.ndarray  # [P] TP, CLS, LOC, BOTH, DUPE or BKG
    gt_label: np.ndarray  # [P] class of the box a CLS/LOC error points at (-1 otherwise)
    fixable: np.ndarray  # [P] bool: the highest-scored CLS/LOC error of a box nothing matched
    positives: np.ndarray  # [C] ground-truth boxes per class
    missed: np.ndarray  # [C] missed boxes per class


def _image_kinds(iou: np.ndarray, same: np.ndarray, matched: np.ndarray, gt_used: np.ndarray, t: float):
    """(kind [D], the gt each prediction's CLS/LOC error points at [D] or -1) for one image's
    predictions in score order; ``matched`` [D] is the gt index a TP took (-1 for the rest)."""
    kind = np.where(matched >= 0, TP, BOTH)
    target = np.full(len(kind), -1)
    if not iou.shape[1]:
        return np.where(matched >= 0, TP, BKG), target
    cls_iou, other_iou = iou * same, iou * ~same
    best_cls, best_other = cls_iou.argmax(1), other_iou.argmax(1)
    rows = np.arange(len(kind))
    loc = (cls_iou[rows, best_cls] >= BACKGROUND_IOU) & (cls_iou[rows, best_cls] <= t)
    cls = ~loc & (other_iou[rows, best_other] >= t)
    dupe = ~loc & ~cls & ((cls_iou * gt_used[None, :]).max(1) >= t)
    bkg = ~loc & ~cls & ~dupe & (iou.max(1) <= BACKGROUND_IOU)
    for mask, value, points in (
        (loc, LOC, best_cls),
        (cls, CLS, best_other),
        (dupe, DUPE, None),
        (bkg, BKG, None),
    ):
        mask &= matched < 0
        kind[mask] = value
        if points is not None:
            target[mask] = points[mask]
    return kind, target


def _match(record: ImageRecord, det: Detections, t: float):
    """Greedy same-class matching at IoU ``t`` (lanner's), the predictions kept (not ignored)."""
    crowd = crowd_flags(record)
    gt_boxes = np.asarray(record.boxes, dtype=np.float64)[~crowd]
    gt_labels = np.asarray(record.labels, dtype=np.int64)[~crowd]
    iou = box_iou(det.boxes, gt_boxes)
    same = det.labels[:, None] == gt_labels[None, :]
    det_free, gt_free = np.ones(len(det), bool), np.ones(len(gt_boxes), bool)
    matched = np.full(len(det), -1)
    for d, g in greedy_match(iou, same, det_free, gt_free, t):
        matched[d] = g
    kept = (matched >= 0) | ~ignored_detections(det, record, crowd, t)
    return iou[kept], same[kept], matched[kept], ~gt_free, gt_labels, kept


def _image_outcome(record: ImageRecord, det: Detections, t: float, num_classes: int) -> dict:
    det = det.above(-np.inf).take(np.arange(min(len(det), MAX_DETS)))
    iou, same, matched, gt_used, gt_labels, kept = _match(record, det, t)
    kind, target = _image_kinds(iou, same, matched, gt_used, t)
    scores = det.scores[kept]
    # A CLS/LOC error can only be fixed into the box it points at if nothing matched that box,
    # and only the highest-scored such error per box is (TIDE's BestGTMatch).
    fixable = np.zeros(len(kind), bool)
    pointed: set[int] = set()
    for p in np.flatnonzero(target >= 0):  # predictions are in descending score order
        g = int(target[p])
        if not gt_used[g] and g not in pointed:
            fixable[p] = True
            pointed.add(g)
    missed = np.array([g for g in range(len(gt_labels)) if not gt_used[g] and g not in pointed], dtype=int)
    return {
        "score": scores,
        "label": det.labels[kept],
        "kind": kind,
        "gt_label": np.where(target >= 0, gt_labels[np.maximum(target, 0)] if len(gt_labels) else -1, -1),
        "fixable": fixable,
        "positives": np.bincount(gt_labels, minlength=num_classes),
        "missed": np.bincount(gt_labels[missed], minlength=num_classes),
    }


def outcome(dataset: Dataset, predictions: list[Detections], t: float) -> Outcome:
    """Every prediction's kind at IoU ``t`` over the whole dataset."""
    num_classes = len(dataset.classes)
    parts = [_image_outcome(r, d, t, num_classes) for r, d in zip(dataset.records, predictions, strict=True)]

    def joined(key: str, dtype) -> np.ndarray:
        return np.concatenate([p[key] for p in parts]).astype(dtype) if parts else np.zeros(0, dtype)

    summed = {k: sum((p[k] for p in parts), np.zeros(num_classes, int)) for k in ("positives", "missed")}
    return Outcome(
        joined("score", float), joined("label", int), joined("kind", int), joined("gt_label", int),
        joined("fixable", bool), summed["positives"], summed["missed"],
    )  # fmt: skip


def tide_ap(scores: np.ndarray, hits: np.ndarray, positives: int) -> float:
    """TIDE's (and COCO's) 101-point interpolated AP of one class."""
    if positives <= 0 or not len(scores):
        return 0.0
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(hits[order])
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / positives
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the curve's upper envelope
    grid = np.arange(101) / 100  # exactly TIDE's recall points (linspace rounds some differently)
    index = np.searchsorted(recall, grid, side="left")
    return float(np.where(index < len(precision), precision[np.minimum(index, len(precision) - 1)], 0).mean())


def tide_map(label: np.ndarray, score: np.ndarray, hit: np.ndarray, positives: np.ndarray) -> float | None:
    """Mean of :func:`tide_ap` over classes with ground truth or predictions (None: no such class)."""
    aps = [
        tide_ap(score[label == c], hit[label == c], int(positives[c]))
        for c in range(len(positives))
        if positives[c] > 0 or (label == c).any()
    ]
    return float(np.mean(aps)) if aps else None


def fixed_map(o: Outcome, kind: str) -> float | None:
    """mAP with every error of ``kind`` fixed (rules in the module docstring)."""
    label, hit, keep, positives = o.label.copy(), o.kind == TP, np.ones(len(o.kind), bool), o.positives
    if kind == "missed":
        positives = positives - o.missed
    elif kind in ("classification", "localisation"):
        mine = o.kind == (CLS if kind == "classification" else LOC)
        hit = hit | (mine & o.fixable)
        keep = ~mine | o.fixable
        if kind == "classification":
            label = np.where(mine, o.gt_label, label)
    else:
        keep = o.kind != {"both": BOTH, "duplicate": DUPE, "background": BKG}[kind]
    return tide_map(label[keep], o.score[keep], hit[keep], positives)


def delta_ap(o: Outcome) -> tuple[float | None, dict[str, float]]:
    """(TIDE mAP, {kind: how much it rises when that kind is fixed})."""
    base = tide_map(o.label, o.score, o.kind == TP, o.positives)
    if base is None:
        return None, dict.fromkeys(KINDS, 0.0)
    return base, {k: max((fixed_map(o, k) or 0.0) - base, 0.0) for k in KINDS}


def _counts(o: Outcome, classes: list[str]) -> dict[str, dict[str, int]]:
    kinds = {"classification": CLS, "localisation": LOC, "both": BOTH, "duplicate": DUPE, "background": BKG}
    counts = {}
    for c, name in enumerate(classes):
        mine = o.kind[o.label == c]
        counts[name] = {k: int((mine == v).sum()) for k, v in kinds.items()} | {"missed": int(o.missed[c])}
    return counts


def error_breakdown(dataset: Dataset, predictions: list[Detections], ious=COCO_IOUS) -> dict:
    """metrics.json's ``errors``: dAP per kind at IoU .5 (``map50``) and over ``ious`` (``map``),
    TIDE's own mAP at IoU .5 they add to, and the counts per class and in total."""
    at_50 = outcome(dataset, predictions, 0.5)
    base50, d50 = delta_ap(at_50)
    runs = [d50 if t == 0.5 else delta_ap(outcome(dataset, predictions, t))[1] for t in ious]
    per_class = _counts(at_50, list(dataset.classes))
    return {
        "tide_map50": base50,
        "dap50": d50,
        "dap": {k: float(np.mean([r[k] for r in runs])) for k in KINDS},
        "counts": {k: sum(c[k] for c in per_class.values()) for k in KINDS},
        "per_class": per_class,
    }
