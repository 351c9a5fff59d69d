"""Detection evaluation: COCO mAP/AR, per-class counts at a score threshold, confusion matrix, errors.

Two views of the same predictions, on purpose:

* **Ranking quality** - mAP@[.5:.95], mAP@.5, mAP@.75, mAP by object size, AR@1/10/100 and
  per-class AP/AP50 - is COCOeval's, computed by faster-coco-eval and tested equal to pycocotools
  (see :mod:`lanner.eval._coco` for the conventions: box areas, crowd and ignore handling, maxDets).
  It uses *all* predictions whatever their score.
* **Operating point** - per-class precision/recall/F1/TP/FP/misses, the confusion matrix and the
  per-image error counts - uses only predictions with ``score >= score_threshold``, matched greedily
  by descending score at ``IoU >= iou_threshold`` (COCO's matching at one IoU):

  1. each prediction takes the unmatched ground-truth box *of its class* with the highest IoU
     (a true positive);
  2. a prediction left over that covers a crowd box of its class or an ignore region
     (intersection / prediction area >= ``iou_threshold``) is ignored: neither TP nor FP;
  3. a prediction still left over takes the unmatched box *of another class* with the highest IoU
     (a wrong-class detection);
  4. what remains is a background false positive (a prediction) or a miss (a ground-truth box).

  The confusion matrix is (C+1) x (C+1): rows are true classes, columns predicted classes, the last
  row/column "background". A miss lands in the background column, a background false positive in
  the background row. Per class, ``fp`` counts every prediction of the class that is not a TP (wrong
  class included) and ``misses`` every box of the class that is not found (wrong class included);
  per image, ``errors`` splits them without double counting into ``fp`` (background), ``miss``
  (background) and ``wrong_class``.

Undefined values (a ratio with a zero denominator, AP of a class without ground truth) are ``None``
in the returned dict, so metrics.json holds ``null`` rather than the invalid JSON ``NaN`` or COCO's -1.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lanner._io import write_atomic, write_json, write_text
from lanner.data.detections import Detections
from lanner.data.geometry import box_ioa, box_iou
from lanner.data.records import Dataset, ImageRecord
from lanner.eval._coco import (
    CocoResult,
    average_precision,
    average_recall,
    detections_to_coco,
    pr_curve,
    run_cocoeval,
    to_coco,
)
from lanner.eval.detection_plots import plot_confusion_matrix, plot_pr_curves
from lanner.eval.thresholds import ChosenThreshold, best_f1_threshold

__all__ = [
    "evaluate_detections",
    "write_detection_outputs",
    "to_coco",
    "detections_to_coco",
    "match_image",
    "ImageMatch",
]

BACKGROUND = "background"


# ---------------------------------------------------------------- matching at the operating point


@dataclass
class ImageMatch:
    """The outcome of matching one image at the operating point.

    ``pairs`` holds one (true class, predicted class) row per counted box, background = C:
    (c, c) a TP, (c, d) a wrong class, (c, C) a miss, (C, d) a background false positive.
    Ignored predictions and crowd ground truth are not in it.
    """

    pairs: np.ndarray  # [P, 2] int
    num_classes: int

    @property
    def errors(self) -> dict[str, int]:
        """Error counts without double counting: background FPs, misses, wrong-class detections."""
        true, pred, bg = self.pairs[:, 0], self.pairs[:, 1], self.num_classes
        return {
            "fp": int((true == bg).sum()),
            "miss": int((pred == bg).sum()),
            "wrong_class": int(((true != pred) & (true != bg) & (pred != bg)).sum()),
        }


def greedy_match(
    iou: np.ndarray, allowed: np.ndarray, det_free: np.ndarray, gt_free: np.ndarray, thr: float
) -> list[tuple[int, int]]:
    """(det, gt) pairs: each free detection in row (= score) order takes the free allowed ground
    truth with the highest IoU >= ``thr``. Marks what it matches as taken in the ``*_free`` masks."""
    pairs = []
    reachable = allowed & (iou >= thr)  # [D, G]: what each detection could take if it were free
    for d in np.flatnonzero(det_free & reachable.any(axis=1)):  # the others can take nothing
        candidates = np.where(reachable[d] & gt_free, iou[d], -1.0)
        if candidates.max() < 0:
            continue
        g = int(np.argmax(candidates))
        det_free[d] = gt_free[g] = False
        pairs.append((int(d), g))
    return pairs


def ignored_detections(det: Detections, record: ImageRecord, crowd: np.ndarray, thr: float) -> np.ndarray:
    """Detections inside a crowd box of their class or inside any ignore region."""
    ignored = np.zeros(len(det), dtype=bool)
    if crowd.any():
        same_class = det.labels[:, None] == record.labels[crowd][None, :]
        ignored |= ((box_ioa(det.boxes, record.boxes[crowd]) >= thr) & same_class).any(axis=1)
    if len(record.ignore):
        ignored |= (box_ioa(det.boxes, np.asarray(record.ignore, dtype=np.float64)) >= thr).any(axis=1)
    return ignored


def crowd_flags(record: ImageRecord) -> np.ndarray:
    if len(record.iscrowd) == len(record.boxes):
        return np.asarray(record.iscrowd, dtype=bool)
    return np.zeros(len(record.boxes), dtype=bool)


def match_image(
    record: ImageRecord,
    det: Detections,
    num_classes: int,
    *,
    score_threshold: float | np.ndarray,
    iou_threshold: float,
) -> ImageMatch:
    """Match one image's predictions to its ground truth (rules in the module docstring);
    ``score_threshold`` is one number or [C] per class."""
    det = det.above(score_threshold)
    crowd = crowd_flags(record)
    gt_boxes = np.asarray(record.boxes, dtype=np.float64)[~crowd]
    gt_labels = np.asarray(record.labels, dtype=np.int64)[~crowd]
    iou = box_iou(det.boxes, gt_boxes)
    det_free = np.ones(len(det), dtype=bool)
    gt_free = np.ones(len(gt_boxes), dtype=bool)
    same_class = det.labels[:, None] == gt_labels[None, :]

    pairs = [
        (gt_labels[g], det.labels[d])
        for d, g in greedy_match(iou, same_class, det_free, gt_free, iou_threshold)
    ]
    det_free &= ~ignored_detections(det, record, crowd, iou_threshold)
    pairs += [
        (gt_labels[g], det.labels[d])
        for d, g in greedy_match(iou, ~same_class, det_free, gt_free, iou_threshold)
    ]
    pairs += [(num_classes, label) for label in det.labels[det_free]]
    pairs += [(label, num_classes) for label in gt_labels[gt_free]]
    return ImageMatch(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), num_classes)


def same_class_hits(
    record: ImageRecord, det: Detections, iou_threshold: float
) -> tuple[Detections, np.ndarray, np.ndarray]:
    """Step 1 of the matching (and step 2's ignoring) at every score at once: ``det`` sorted by
    score, whether each is a true positive [K] bool, whether each counts at all (not ignored) [K]."""
    det = det.above(-np.inf)
    crowd = crowd_flags(record)
    gt_boxes = np.asarray(record.boxes, dtype=np.float64)[~crowd]
    gt_labels = np.asarray(record.labels, dtype=np.int64)[~crowd]
    det_free = np.ones(len(det), dtype=bool)
    same_class = det.labels[:, None] == gt_labels[None, :]
    iou = box_iou(det.boxes, gt_boxes)
    greedy_match(iou, same_class, det_free, np.ones(len(gt_boxes), dtype=bool), iou_threshold)
    hits = ~det_free
    counted = hits | ~ignored_detections(det, record, crowd, iou_threshold)
    return det, hits, counted


def detection_thresholds(
    dataset: Dataset, predictions: list[Detections], iou_threshold: float = 0.5
) -> dict[str, ChosenThreshold]:
    """{class: the score threshold maximising its F1} (:mod:`lanner.eval.thresholds`)."""
    _check_inputs(dataset, predictions)
    scores, labels, hits = [], [], []
    positives = np.zeros(len(dataset.classes), dtype=np.int64)
    for record, det in zip(dataset.records, predictions, strict=True):
        det, hit, counted = same_class_hits(record, det, iou_threshold)
        scores.append(det.scores[counted])
        labels.append(det.labels[counted])
        hits.append(hit[counted])
        gt_labels = np.asarray(record.labels, dtype=np.int64)[~crowd_flags(record)]
        positives += np.bincount(gt_labels, minlength=len(dataset.classes))
    scores, labels, hits = (np.concatenate(x) if x else np.zeros(0) for x in (scores, labels, hits))
    return {
        name: best_f1_threshold(scores[labels == c], hits[labels == c].astype(bool), int(positives[c]))
        for c, name in enumerate(dataset.classes)
    }


def confusion_matrix(matches: list[ImageMatch], num_classes: int) -> np.ndarray:
    """(C+1) x (C+1) counts, rows = true class, columns = predicted class, background last."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for match in matches:
        np.add.at(matrix, (match.pairs[:, 0], match.pairs[:, 1]), 1)
    return matrix


# ---------------------------------------------------------------- metrics


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den > 0 else None


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _per_class(
    classes: list[str], matrix: np.ndarray, coco: CocoResult | None, thresholds: np.ndarray
) -> dict[str, dict]:
    """Per-class AP from COCO, counts and ratios from the confusion matrix (background excluded),
    the score threshold they were counted at."""
    per_class = {}
    for c, name in enumerate(classes):
        tp = int(matrix[c, c])
        predicted, support = int(matrix[:, c].sum()), int(matrix[c, :].sum())
        precision, recall = _ratio(tp, predicted), _ratio(tp, support)
        per_class[name] = {
            "ap": average_precision(coco, classes=[c]) if coco else None,
            "ap50": average_precision(coco, iou=0.5, classes=[c]) if coco else None,
            "precision": precision,
            "recall": recall,
            "f1": _f1(precision, recall),
            "tp": tp,
            "fp": predicted - tp,
            "misses": support - tp,
            "support": support,
            "threshold": float(thresholds[c]),
        }
    return per_class


def _coco_summary(coco: CocoResult | None) -> dict[str, float | None]:
    if coco is None:
        keys = ("map", "map50", "map75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100")
        return dict.fromkeys(keys)
    return {
        "map": average_precision(coco),
        "map50": average_precision(coco, iou=0.5),
        "map75": average_precision(coco, iou=0.75),
        "map_small": average_precision(coco, area="small"),
        "map_medium": average_precision(coco, area="medium"),
        "map_large": average_precision(coco, area="large"),
        "mar_1": average_recall(coco, max_dets=1),
        "mar_10": average_recall(coco, max_dets=10),
        "mar_100": average_recall(coco, max_dets=100),
    }


def _check_inputs(dataset: Dataset, predictions: list[Detections]) -> None:
    if len(predictions) != len(dataset.records):
        raise ValueError(
            f"{len(predictions)} predictions for {len(dataset.records)} images: need one per image"
        )
    num_classes = len(dataset.classes)
    for index, det in enumerate(predictions):
        if len(det) and (det.labels.min() < 0 or det.labels.max() >= num_classes):
            raise ValueError(
                f"image {index} ({dataset.records[index].path}): "
                f"predicted class index outside 0..{num_classes - 1}"
            )


def _split_name(dataset: Dataset) -> str | None:
    splits = {r.split for r in dataset.records}
    return splits.pop() if len(splits) == 1 else None


def coco_evaluation(dataset: Dataset, predictions: list[Detections]) -> CocoResult | None:
    """COCOeval's precision/recall arrays for these predictions (None when nothing to evaluate)."""
    return run_cocoeval(to_coco(dataset), detections_to_coco(dataset, predictions))


def match_all(
    dataset: Dataset,
    predictions: list[Detections],
    *,
    score_threshold: float | np.ndarray,
    iou_threshold: float,
) -> list[ImageMatch]:
    num_classes = len(dataset.classes)
    return [
        match_image(record, det, num_classes, score_threshold=score_threshold, iou_threshold=iou_threshold)
        for record, det in zip(dataset.records, predictions, strict=True)
    ]


def evaluate_detections(
    dataset: Dataset,
    predictions: list[Detections],
    *,
    score_threshold: float = 0.25,
    iou_threshold: float = 0.5,
    class_thresholds: np.ndarray | None = None,
) -> dict:
    """metrics.json content for detection (keys: docs/run-directory.md), one prediction per record.

    The operating point is ``class_thresholds`` ([C], one per class) when given, else ``score_threshold``
    for every class; ``per_class[name]["threshold"]`` records which."""
    _check_inputs(dataset, predictions)
    coco = coco_evaluation(dataset, predictions)
    thresholds = np.full(len(dataset.classes), float(score_threshold))
    if class_thresholds is not None:
        thresholds = np.asarray(class_thresholds, dtype=np.float64)
    matches = match_all(dataset, predictions, score_threshold=thresholds, iou_threshold=iou_threshold)
    matrix = confusion_matrix(matches, len(dataset.classes))
    return {
        "task": "detect",
        "split": _split_name(dataset),
        "num_images": len(dataset.records),
        "classes": list(dataset.classes),
        **_coco_summary(coco),
        "per_class": _per_class(dataset.classes, matrix, coco, thresholds),
        "confusion_matrix": matrix.tolist(),
        "score_threshold": float(score_threshold),
        "iou_threshold": float(iou_threshold),
    }


# ---------------------------------------------------------------- outputs


def _rounded(values: np.ndarray, decimals: int) -> list:
    return np.round(np.asarray(values, dtype=np.float64), decimals).tolist()


def _image_entry(
    record: ImageRecord, det: Detections, match: ImageMatch, score_threshold: float | np.ndarray
) -> dict:
    # Only the predictions the errors were counted on: the gallery then shows exactly what was scored.
    shown = det.above(score_threshold)
    return {
        "path": str(record.path),
        "width": record.width,
        "height": record.height,
        "gt_boxes": _rounded(record.boxes, 2),
        "gt_labels": np.asarray(record.labels, dtype=np.int64).tolist(),
        "gt_iscrowd": crowd_flags(record).tolist(),
        "ignore_boxes": _rounded(np.asarray(record.ignore).reshape(-1, 4), 2),
        "pred_boxes": _rounded(shown.boxes, 2),
        "pred_labels": shown.labels.tolist(),
        "pred_scores": _rounded(shown.scores, 4),
        "errors": match.errors,
    }


def predictions_document(metrics: dict, dataset: Dataset, predictions: list[Detections]) -> dict:
    """The eval/predictions.json content, predictions filtered at the metrics' score thresholds."""
    score_threshold = metric_thresholds(metrics)
    matches = match_all(
        dataset,
        predictions,
        score_threshold=score_threshold,
        iou_threshold=metrics.get("iou_threshold", 0.5),
    )
    images = [
        _image_entry(record, det, match, score_threshold)
        for record, det, match in zip(dataset.records, predictions, matches, strict=True)
    ]
    return {
        "task": "detect",
        "classes": list(dataset.classes),
        "split": metrics.get("split"),
        "images": images,
    }


def metric_thresholds(metrics: dict) -> np.ndarray:
    """[C] the per-class thresholds metrics.json was counted at (its single one where absent)."""
    default = float(metrics["score_threshold"])
    per_class = metrics.get("per_class") or {}
    return np.array(
        [(per_class.get(name) or {}).get("threshold", default) for name in metrics["classes"]],
        dtype=np.float64,
    )


def _confusion_csv(classes: list[str], matrix: list[list[int]]) -> str:
    """Rows = true class, columns = predicted class, background last (same header as classification)."""
    labels = [*classes, BACKGROUND]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *labels])
    for name, row in zip(labels, matrix, strict=True):
        writer.writerow([name, *row])
    return buffer.getvalue()


def write_detection_outputs(
    metrics: dict, dataset: Dataset, predictions: list[Detections], out_dir: Path
) -> None:
    """Write eval/confusion_matrix.csv/.png, eval/pr_curves.png and eval/predictions.json under ``out_dir``.

    ``out_dir`` is the ``eval`` directory itself. Every file is written atomically.
    """
    _check_inputs(dataset, predictions)
    out_dir = Path(out_dir)
    classes = list(dataset.classes)
    write_text(out_dir / "confusion_matrix.csv", _confusion_csv(classes, metrics["confusion_matrix"]))
    write_atomic(
        out_dir / "confusion_matrix.png",
        lambda p: plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), [*classes, BACKGROUND], p),
    )
    coco = coco_evaluation(dataset, predictions)
    curves = {name: pr_curve(coco, c) if coco else None for c, name in enumerate(classes)}
    write_atomic(out_dir / "pr_curves.png", lambda p: plot_pr_curves(curves, metrics.get("per_class", {}), p))
    write_json(out_dir / "predictions.json", predictions_document(metrics, dataset, predictions))
