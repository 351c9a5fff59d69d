"""Detection evaluation speed: ``lanner.eval.detection.evaluate_detections`` vs COCOeval alone.

    .venv/bin/python benchmarks/eval_speed.py [--data ../shared/data/rbc_roboflow_coco] \
        [--images 100 1000 5000] [--repeats 3] [--out benchmarks/results/eval_speed.json]

lanner's evaluation computes COCO's mAP/AR with faster-coco-eval and, on top, the operating point
(per-class TP/FP/misses at a score threshold, the confusion matrix, per-image error counts). This
measures what that costs next to the bare COCOeval of faster-coco-eval (the same mAP, nothing else)
and next to pycocotools (the reference implementation), on the same ground truth and detections,
one after the other in one process, best of ``--repeats``.

The ground truth is the real dataset's boxes (all splits), repeated to reach N images; the
detections are made from it as a detector's look: 85% of the boxes kept, shifted by ~8% of their
size, 10% relabelled, plus 0-5 false positives per image and a score from U(0.01, 1). Speed is this
file's business: the unit tests assert what the evaluation counts, not how long it takes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from lanner.data.detections import Detections
from lanner.data.formats import read_dataset
from lanner.data.records import Dataset
from lanner.eval._coco import MAX_DETS, detections_to_coco, to_coco
from lanner.eval.detection import evaluate_detections

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def detector_like(dataset: Dataset, rng: np.random.Generator) -> list[Detections]:
    """One prediction per record: kept, shifted and relabelled GT boxes plus false positives."""
    num_classes = len(dataset.classes)
    predictions = []
    for record in dataset.records:
        keep = rng.random(len(record.boxes)) > 0.15
        boxes = record.boxes[keep].astype(np.float64)
        sizes = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
        boxes = boxes + rng.normal(0, 0.08, boxes.shape) * sizes
        labels = record.labels[keep].copy()
        relabel = rng.random(len(labels)) < 0.1
        labels[relabel] = rng.integers(0, num_classes, relabel.sum())
        num_fp = int(rng.integers(0, 6))
        side = float(max(record.width or 400, record.height or 400))
        xy = rng.uniform(0, side * 0.9, (num_fp, 2))
        fp = np.concatenate([xy, xy + rng.uniform(10, side * 0.3, (num_fp, 2))], axis=1)
        boxes = np.concatenate([boxes, fp])
        labels = np.concatenate([labels, rng.integers(0, num_classes, num_fp)])
        predictions.append(Detections(boxes, rng.uniform(0.01, 1.0, len(boxes)), labels))
    return predictions


def repeated(dataset: Dataset, n: int) -> Dataset:
    records = (dataset.records * (n // len(dataset.records) + 1))[:n]
    return Dataset(dataset.classes, records, task="detect")


def best_of(repeats: int, fn) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def bare_cocoeval(module: str, gt: dict, results: list[dict]) -> float:
    """COCO bbox evaluate + accumulate + summarize with ``module`` (faster_coco_eval or pycocotools);
    its mAP@[.5:.95]."""
    with contextlib.redirect_stdout(io.StringIO()):
        if module == "faster_coco_eval":
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval
        else:
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        coco_gt = COCO()  # handed the dict as lanner hands it (no copy: a copy would be timed too)
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.maxDets = list(MAX_DETS)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def measure(dataset: Dataset, n: int, repeats: int) -> dict:
    data = repeated(dataset, n)
    predictions = detector_like(data, np.random.default_rng(0))
    gt, results = to_coco(data), detections_to_coco(data, predictions)
    lanner_s, metrics = best_of(repeats, lambda: evaluate_detections(data, predictions))
    fast_s, fast_map = best_of(repeats, lambda: bare_cocoeval("faster_coco_eval", gt, results))
    ref_s, ref_map = best_of(repeats, lambda: bare_cocoeval("pycocotools", gt, results))
    row = {
        "images": n,
        "detections": len(results),
        "lanner_s": round(lanner_s, 3),
        "faster_coco_eval_s": round(fast_s, 3),
        "pycocotools_s": round(ref_s, 3),
        "lanner_vs_faster_coco_eval": round(lanner_s / fast_s, 2),
        "lanner_vs_pycocotools": round(lanner_s / ref_s, 2),
        "map": {"lanner": metrics["map"], "faster_coco_eval": fast_map, "pycocotools": ref_map},
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "rbc_roboflow_coco"))
    parser.add_argument("--images", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    dataset = read_dataset(args.data)
    rows = [measure(dataset, n, args.repeats) for n in args.images]
    if args.out:
        args.out.write_text(json.dumps({"data": args.data, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
