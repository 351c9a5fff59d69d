"""COCO bridge: lanner datasets/predictions as COCO dicts, and the COCO mAP computation itself.

Why faster-coco-eval and not pycocotools: both implement the same algorithm (faster-coco-eval is a
maintained fork of the COCO API whose per-image matching and accumulation run in C++), but
faster-coco-eval is several times faster, silent (pycocotools prints to stdout on every call), and it
evaluates an empty result list (pycocotools' ``loadRes([])`` crashes). Parity is not taken on trust:
``tests/test_eval_detection.py`` runs pycocotools' ``COCOeval`` independently on real data (crowd
GT, ignore regions, images without GT or predictions, tied scores) and requires every number to
agree within 1e-4.

COCO conventions used here (they change the numbers, so they are spelled out):

* Image ids are positions in ``dataset.records`` + 1 and category ids are class indices + 1. The
  source ids (``ImageRecord.image_id``) are not reused: they may repeat across splits. Annotation
  ids start at 1 because pycocotools treats a matched ground truth with id 0 as unmatched.
* ``area`` (used for the small/medium/large buckets: < 32², < 96², the rest) is the box area w*h.
  Polygon/mask areas are not available in lanner records, so for datasets converted from COCO
  polygons the buckets can differ slightly from the official COCO numbers, which use mask area.
* Crowd boxes (``iscrowd``) become ``iscrowd=1`` ground truth: they are never counted as misses,
  and a detection covering one (intersection / detection area >= IoU threshold) that matched no
  regular box is ignored - neither TP nor FP. The same holds for detections beyond ``maxDets``
  (1/10/100 per image, highest scores kept).
* Ignore regions (``ImageRecord.ignore``) are class-agnostic, but COCO crowd boxes belong to one
  category, so each ignore region becomes one ``iscrowd=1`` box *per class*. A detection of any
  class inside an ignore region is therefore neither TP nor FP.
* COCO reports -1 for an undefined value (e.g. AP of a class without ground truth); callers get
  ``None`` instead, so it can never be averaged by mistake and serialises to JSON ``null``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from lanner.data.records import Dataset

AREA_RANGES = ("all", "small", "medium", "large")  # index order of COCOeval's area axis
MAX_DETS = (1, 10, 100)  # index order of COCOeval's maxDets axis


class _HasBoxes(Protocol):
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def _xywh(boxes: np.ndarray) -> list[list[float]]:
    """[N, 4] xyxy -> N [x, y, w, h] lists of Python floats (one array operation, not N: an evaluation
    of thousands of images converts hundreds of thousands of boxes)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1).tolist()


def _box_annotation(ann_id: int, image_id: int, category_id: int, xywh: list[float], crowd: bool) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": xywh,
        "area": xywh[2] * xywh[3],  # box area: polygon areas are not available
        "iscrowd": int(crowd),
        "segmentation": [],
    }


def to_coco(dataset: Dataset, *, include_ignore: bool = True) -> dict:
    """The dataset as a COCO ground-truth dict (ids and conventions: see the module docstring).

    With ``include_ignore`` each ignore region is added as one crowd box per class, which is how
    COCOeval is told to neither reward nor punish detections there. Turn it off for a plain export.
    """
    categories = [
        {"id": i + 1, "name": name, "supercategory": "none"} for i, name in enumerate(dataset.classes)
    ]
    images, annotations = [], []
    for index, record in enumerate(dataset.records):
        image_id = index + 1
        images.append(
            {"id": image_id, "file_name": str(record.path), "width": record.width, "height": record.height}
        )
        crowd = (
            record.iscrowd if len(record.iscrowd) == len(record.boxes) else np.zeros(len(record.boxes), bool)
        )
        for xywh, label, is_crowd in zip(
            _xywh(record.boxes), np.asarray(record.labels).tolist(), crowd, strict=True
        ):
            annotations.append(
                _box_annotation(len(annotations) + 1, image_id, label + 1, xywh, bool(is_crowd))
            )
        if include_ignore:
            for region in _xywh(record.ignore):
                for category in categories:
                    annotations.append(
                        _box_annotation(len(annotations) + 1, image_id, category["id"], region, True)
                    )
    return {"images": images, "annotations": annotations, "categories": categories}


def detections_to_coco(dataset: Dataset, predictions: list[_HasBoxes]) -> list[dict]:
    """Predictions as a COCO result list (``image_id``, ``category_id``, xywh ``bbox``, ``score``)."""
    results = []
    for index, det in enumerate(predictions):
        scores, labels = np.asarray(det.scores, dtype=np.float64).tolist(), np.asarray(det.labels).tolist()
        for xywh, score, label in zip(_xywh(det.boxes), scores, labels, strict=True):
            results.append(
                {"image_id": index + 1, "category_id": int(label) + 1, "bbox": xywh, "score": score}
            )
    return results


@dataclass
class CocoResult:
    """COCOeval's accumulated arrays, with -1 meaning "undefined".

    ``precision`` is [iou T, recall R, class K, area A, maxDets M]; ``recall`` is [T, K, A, M].
    """

    precision: np.ndarray
    recall: np.ndarray
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray


def _silent(*_args, **_kwargs) -> None:
    return None


def run_cocoeval(gt: dict, results: list[dict]) -> CocoResult | None:
    """Run COCO bbox evaluation; None when there is nothing to evaluate (no images or no classes)."""
    if not gt["images"] or not gt["categories"]:
        return None
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(gt, print_function=_silent)
    # loadRes writes area/id into the result dicts: hand it copies so callers' lists stay intact.
    coco_dt = coco_gt.loadRes([dict(r) for r in results])
    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=_silent)
    evaluator.params.maxDets = list(MAX_DETS)
    evaluator.evaluate()
    evaluator.accumulate()
    return CocoResult(
        precision=np.asarray(evaluator.eval["precision"]),
        recall=np.asarray(evaluator.eval["recall"]),
        iou_thresholds=np.asarray(evaluator.params.iouThrs),
        recall_thresholds=np.asarray(evaluator.params.recThrs),
    )


def mean_defined(values: np.ndarray) -> float | None:
    """COCO's summary: mean over the defined (> -1) entries, None when there are none."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else None


def _iou_index(result: CocoResult, iou: float) -> int:
    return int(np.argmin(np.abs(result.iou_thresholds - iou)))


def average_precision(
    result: CocoResult, *, iou: float | None = None, area: str = "all", max_dets: int = 100, classes=None
) -> float | None:
    """AP over IoU .50:.95 (or at one ``iou``), optionally for a subset of class indices."""
    p = result.precision[:, :, :, AREA_RANGES.index(area), MAX_DETS.index(max_dets)]
    if iou is not None:
        p = p[_iou_index(result, iou)]
        p = p[:, classes] if classes is not None else p
    elif classes is not None:
        p = p[:, :, classes]
    return mean_defined(p)


def average_recall(result: CocoResult, *, area: str = "all", max_dets: int = 100) -> float | None:
    """AR over IoU .50:.95 and all classes."""
    return mean_defined(result.recall[:, :, AREA_RANGES.index(area), MAX_DETS.index(max_dets)])


def pr_curve(
    result: CocoResult, class_index: int, *, iou: float = 0.5
) -> tuple[np.ndarray, np.ndarray] | None:
    """(recall, precision) at one IoU for one class (all areas, 100 dets); None when undefined."""
    precision = result.precision[_iou_index(result, iou), :, class_index, 0, MAX_DETS.index(100)]
    if (precision <= -1).all():
        return None
    return result.recall_thresholds, np.clip(precision, 0.0, None)
