"""Detection metrics: COCO numbers equal pycocotools on real data; operating-point counts hand-checked."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest

from lanner.data.detections import Detections
from lanner.data.records import Dataset, ImageRecord
from lanner.eval._coco import pr_curve
from lanner.eval.detection import (
    coco_evaluation,
    detections_to_coco,
    evaluate_detections,
    to_coco,
    write_detection_outputs,
)

RBC = "rbc_roboflow_coco"
TOL = 1e-4


# ---------------------------------------------------------------- real data + independent reference


def _load_raw(shared_data: Path) -> dict:
    """valid + test of the RBC set as one raw COCO dict (test image ids shifted to stay unique)."""
    merged = {"images": [], "annotations": [], "categories": None}
    for split, offset in (("valid", 0), ("test", 1000)):
        raw = json.loads((shared_data / RBC / split / "_annotations.coco.json").read_text())
        merged["categories"] = raw["categories"]
        for img in raw["images"]:
            merged["images"].append({**img, "id": img["id"] + offset, "split": split, "dir": split})
        for ann in raw["annotations"]:
            merged["annotations"].append(
                {**ann, "image_id": ann["image_id"] + offset, "ignore_region": False}
            )
    return merged


def _perturb_ground_truth(raw: dict, rng: np.random.Generator) -> dict:
    """Crowd boxes, small boxes, ignore regions and images emptied of GT - in the raw dict itself,
    so the lanner Dataset and the pycocotools reference are built from the same truth."""
    raw = copy.deepcopy(raw)
    emptied = {raw["images"][2]["id"], raw["images"][21]["id"]}
    anns = [a for a in raw["annotations"] if a["image_id"] not in emptied]
    for ann in anns:
        roll = rng.random()
        if roll < 0.06:
            ann["iscrowd"] = 1
        elif roll < 0.16:  # shrink into the "small" size bucket (< 32^2 px)
            ann["bbox"] = [
                ann["bbox"][0],
                ann["bbox"][1],
                float(rng.uniform(8, 30)),
                float(rng.uniform(8, 30)),
            ]
    for img in raw["images"][5:8]:  # one class-agnostic ignore region in a few images
        anns.append({"image_id": img["id"], "bbox": [0.0, 0.0, 120.0, 100.0], "ignore_region": True})
    raw["annotations"] = anns
    return raw


def _xyxy(bbox) -> list[float]:
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def _dataset_from_raw(raw: dict, shared_data: Path) -> Dataset:
    """A lanner Dataset straight from raw COCO json (class index = position in categories)."""
    cat_index = {c["id"]: i for i, c in enumerate(raw["categories"])}
    records = []
    for img in raw["images"]:
        anns = [a for a in raw["annotations"] if a["image_id"] == img["id"]]
        boxes = [a for a in anns if not a["ignore_region"]]
        regions = [a for a in anns if a["ignore_region"]]
        records.append(
            ImageRecord(
                path=shared_data / RBC / img["dir"] / img["file_name"],
                width=img["width"],
                height=img["height"],
                boxes=np.array([_xyxy(a["bbox"]) for a in boxes], dtype=np.float32).reshape(-1, 4),
                labels=np.array([cat_index[a["category_id"]] for a in boxes], dtype=np.int64),
                iscrowd=np.array([bool(a.get("iscrowd", 0)) for a in boxes], dtype=bool),
                ignore=np.array([_xyxy(a["bbox"]) for a in regions], dtype=np.float32).reshape(-1, 4),
                split=img["split"],
                image_id=img["id"],
            )
        )
    return Dataset([c["name"] for c in raw["categories"]], records, task="detect", format="coco")


def _reference_gt(raw: dict) -> dict:
    """The pycocotools ground truth, independent of lanner's to_coco: raw ids (image ids and
    category ids as in the file), ignore regions as one crowd box per category as documented."""
    anns = []
    for ann in raw["annotations"]:
        cats = [c["id"] for c in raw["categories"]] if ann["ignore_region"] else [ann["category_id"]]
        for cat in cats:
            x, y, w, h = ann["bbox"]
            crowd = 1 if ann["ignore_region"] else int(ann.get("iscrowd", 0))
            anns.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": crowd,
                    "id": len(anns) + 1,
                }
            )  # ids from 1: pycocotools needs it
    return {
        "images": [{"id": i["id"]} for i in raw["images"]],
        "annotations": anns,
        "categories": [{"id": c["id"], "name": c["name"]} for c in raw["categories"]],
    }


def _jittered_predictions(
    dataset: Dataset, rng: np.random.Generator, *, tie_scores: bool
) -> list[Detections]:
    """Realistic-looking mistakes: dropped, shifted, relabelled boxes, false positives, empty images."""
    num_classes = len(dataset.classes)
    predictions = []
    for index, record in enumerate(dataset.records):
        if index in (0, 20):  # images where the model found nothing
            predictions.append(Detections.empty())
            continue
        keep = rng.random(len(record.boxes)) > 0.15
        boxes = record.boxes[keep].astype(np.float64)
        sizes = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
        boxes = boxes + rng.normal(0, 0.08, boxes.shape) * sizes
        labels = record.labels[keep].copy()
        relabel = rng.random(len(labels)) < 0.1
        labels[relabel] = rng.integers(0, num_classes, relabel.sum())
        num_fp = int(rng.integers(2 if record.num_boxes == 0 else 0, 6))  # GT-less images get FPs
        if index == 10:  # more than maxDets=100: COCO keeps only the 100 highest scores
            num_fp = 130
        xy = rng.uniform(0, 380, (num_fp, 2))
        fp_boxes = np.concatenate([xy, xy + rng.uniform(10, 120, (num_fp, 2))], axis=1)
        for x1, y1, x2, y2 in record.ignore:  # detections of unlabelled objects in ignore regions
            xy = rng.uniform([x1, y1], [x2 - 30, y2 - 30], (3, 2))
            fp_boxes = np.concatenate([fp_boxes, np.concatenate([xy, xy + 25], axis=1)])
        boxes = np.concatenate([boxes, fp_boxes])
        labels = np.concatenate([labels, rng.integers(0, num_classes, len(fp_boxes))])
        scores = rng.uniform(0.01, 1.0, len(boxes))
        if tie_scores:  # quantised scores: ties must be broken the same way as pycocotools
            scores = np.round(scores, 1)
        predictions.append(Detections(boxes, scores, labels))
    return predictions


def _reference_results(raw: dict, predictions: list[Detections]) -> list[dict]:
    cat_ids = [c["id"] for c in raw["categories"]]
    results = []
    for img, det in zip(raw["images"], predictions, strict=True):
        for (x1, y1, x2, y2), score, label in zip(det.boxes, det.scores, det.labels, strict=True):
            results.append(
                {
                    "image_id": img["id"],
                    "category_id": cat_ids[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    return results


def _pycocotools_eval(gt: dict, results: list[dict], cat_ids: list[int] | None = None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _pycocotools_stats(gt: dict, results: list[dict], cat_ids: list[int] | None = None) -> np.ndarray:
    return _pycocotools_eval(gt, results, cat_ids).stats


def _none_as_minus_one(value: float | None) -> float:
    return -1.0 if value is None else value


@pytest.fixture(scope="module")
def rbc(shared_data: Path):
    raw = _perturb_ground_truth(_load_raw(shared_data), np.random.default_rng(0))
    return raw, _dataset_from_raw(raw, shared_data)


@pytest.mark.parametrize("tie_scores", [False, True], ids=["distinct-scores", "tied-scores"])
def test_metrics_equal_pycocotools_on_real_data(rbc, tie_scores):
    raw, dataset = rbc
    # Sanity of the scenario itself: every awkward case the numbers must survive is present.
    assert any(r.iscrowd.any() for r in dataset.records)
    assert sum(len(r.ignore) for r in dataset.records) == 3
    assert sum(r.num_boxes == 0 for r in dataset.records) == 2
    predictions = _jittered_predictions(dataset, np.random.default_rng(1), tie_scores=tie_scores)
    assert sum(len(p) == 0 for p in predictions) == 2

    metrics = evaluate_detections(dataset, predictions)

    gt, results = _reference_gt(raw), _reference_results(raw, predictions)
    reference = _pycocotools_eval(gt, results)
    stats = reference.stats
    keys = ["map", "map50", "map75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100"]
    ours = [_none_as_minus_one(metrics[k]) for k in keys]
    np.testing.assert_allclose(ours, stats[:9], atol=TOL)
    assert stats[3] > 0, "the scenario should have scored small objects"

    for cat in raw["categories"]:
        per_class = metrics["per_class"][cat["name"]]
        ref = _pycocotools_stats(gt, results, cat_ids=[cat["id"]])
        assert _none_as_minus_one(per_class["ap"]) == pytest.approx(ref[0], abs=TOL), cat["name"]
        assert _none_as_minus_one(per_class["ap50"]) == pytest.approx(ref[1], abs=TOL), cat["name"]
    # The PR curves drawn in pr_curves.png are COCOeval's precision at IoU .5 (all areas, 100 dets).
    coco = coco_evaluation(dataset, predictions)
    for k in range(len(dataset.classes)):
        expected = reference.eval["precision"][0, :, k, 0, 2]
        curve = pr_curve(coco, k)
        if (expected == -1).all():
            assert curve is None
        else:
            np.testing.assert_allclose(curve[1], expected, atol=TOL)
    # "RBC-WBC" (Roboflow's supercategory) has no ground truth: its AP is undefined, not 0 or -1.
    assert metrics["per_class"]["RBC-WBC"]["ap"] is None
    assert metrics["per_class"]["rbc"]["ap"] > 0.3


def test_to_coco_round_trips_through_pycocotools(rbc):
    raw, dataset = rbc
    predictions = _jittered_predictions(dataset, np.random.default_rng(2), tie_scores=False)
    ours = _pycocotools_stats(to_coco(dataset), detections_to_coco(dataset, predictions))
    ref = _pycocotools_stats(_reference_gt(raw), _reference_results(raw, predictions))
    np.testing.assert_allclose(ours, ref, atol=TOL)
    gt = to_coco(dataset)
    assert min(a["id"] for a in gt["annotations"]) == 1
    assert len(to_coco(dataset, include_ignore=False)["annotations"]) == sum(
        r.num_boxes for r in dataset.records
    )


def test_operating_point_counts_are_consistent_on_real_data(rbc):
    _, dataset = rbc
    predictions = _jittered_predictions(dataset, np.random.default_rng(3), tie_scores=False)
    metrics = evaluate_detections(dataset, predictions, score_threshold=0.3)
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (4, 4) and matrix[-1, -1] == 0
    non_crowd = sum(int((~r.iscrowd).sum()) for r in dataset.records)
    assert matrix[:-1].sum() == non_crowd  # every non-crowd GT box lands in exactly one cell
    for c, name in enumerate(dataset.classes):
        stats = metrics["per_class"][name]
        assert stats["tp"] == matrix[c, c]
        assert stats["tp"] + stats["misses"] == stats["support"] == matrix[c].sum()
        if stats["tp"] + stats["fp"]:
            assert stats["precision"] == pytest.approx(stats["tp"] / (stats["tp"] + stats["fp"]))
    assert metrics["per_class"]["RBC-WBC"]["recall"] is None  # no support: undefined, not 0


# ---------------------------------------------------------------- hand-computed cases


def _tiny(records: list[ImageRecord], classes=("cat", "dog")) -> Dataset:
    return Dataset(list(classes), records, task="detect")


def _record(boxes=(), labels=(), iscrowd=None, ignore=(), name="a.jpg") -> ImageRecord:
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    crowd = np.zeros(len(boxes), bool) if iscrowd is None else np.array(iscrowd, bool)
    return ImageRecord(
        Path(name),
        100,
        100,
        boxes=boxes,
        labels=np.array(labels, dtype=np.int64),
        iscrowd=crowd,
        ignore=np.array(ignore, dtype=np.float32).reshape(-1, 4),
        split="test",
    )


def test_one_perfect_detection_scores_one():
    dataset = _tiny([_record([[10, 10, 60, 60]], [0])])
    metrics = evaluate_detections(dataset, [Detections([[10, 10, 60, 60]], [0.9], [0])])
    assert metrics["map"] == pytest.approx(1.0) and metrics["map50"] == pytest.approx(1.0)
    assert metrics["mar_1"] == pytest.approx(1.0)
    assert metrics["map_medium"] == pytest.approx(1.0)  # 50x50 = 2500 px: medium
    assert metrics["map_small"] is None and metrics["map_large"] is None
    cat = metrics["per_class"]["cat"]
    assert (cat["tp"], cat["fp"], cat["misses"], cat["support"]) == (1, 0, 0, 1)
    assert cat["precision"] == cat["recall"] == cat["f1"] == 1.0
    assert metrics["per_class"]["dog"]["ap"] is None


def test_only_a_false_positive_scores_zero():
    dataset = _tiny([_record([[10, 10, 60, 60]], [0])])
    metrics = evaluate_detections(dataset, [Detections([[70, 70, 95, 95]], [0.9], [0])])
    assert metrics["map"] == 0.0 and metrics["mar_100"] == 0.0
    cat = metrics["per_class"]["cat"]
    assert (cat["tp"], cat["fp"], cat["misses"]) == (0, 1, 1)
    assert cat["precision"] == 0.0 and cat["f1"] == 0.0


def test_confusion_matrix_hand_checked():
    # image 1: cat found (TP), dog predicted as cat (wrong class), a background FP dog
    # image 2: a missed dog, a cat found twice (the lower-scoring duplicate is a background FP)
    records = [
        _record([[0, 0, 40, 40], [50, 50, 90, 90]], [0, 1], name="1.jpg"),
        _record([[0, 0, 30, 30], [40, 40, 80, 80]], [1, 0], name="2.jpg"),
    ]
    predictions = [
        Detections([[1, 1, 40, 40], [50, 50, 88, 90], [0, 60, 20, 99]], [0.9, 0.8, 0.7], [0, 0, 1]),
        Detections([[40, 40, 80, 80], [41, 41, 80, 80], [0, 0, 30, 30]], [0.95, 0.6, 0.1], [0, 0, 1]),
    ]
    metrics = evaluate_detections(_tiny(records), predictions, score_threshold=0.25)
    # rows = true cat, dog, background; columns = predicted cat, dog, background
    assert metrics["confusion_matrix"] == [
        [2, 0, 0],
        [1, 0, 1],  # the dog at score 0.1 is below the threshold: a miss
        [1, 1, 0],
    ]
    cat, dog = metrics["per_class"]["cat"], metrics["per_class"]["dog"]
    assert (cat["tp"], cat["fp"], cat["misses"], cat["support"]) == (2, 2, 0, 2)
    assert (dog["tp"], dog["fp"], dog["misses"], dog["support"]) == (0, 1, 2, 2)
    assert cat["precision"] == 0.5 and cat["recall"] == 1.0 and cat["f1"] == pytest.approx(2 / 3)
    assert dog["precision"] == 0.0 and dog["f1"] == 0.0


def test_crowd_and_ignore_regions_are_neither_tp_nor_fp():
    record = _record(
        [[0, 0, 40, 40], [50, 0, 100, 50]], [0, 0], iscrowd=[False, True], ignore=[[0, 60, 100, 100]]
    )
    inside_crowd = [55, 5, 80, 30]
    inside_ignore = [10, 70, 30, 90]
    det = Detections([[0, 0, 40, 40], inside_crowd, inside_ignore], [0.9, 0.8, 0.7], [0, 0, 1])
    metrics = evaluate_detections(_tiny([record]), [det])
    cat, dog = metrics["per_class"]["cat"], metrics["per_class"]["dog"]
    assert (cat["tp"], cat["fp"], cat["misses"], cat["support"]) == (1, 0, 0, 1)
    assert dog["fp"] == 0
    assert metrics["per_class"]["cat"]["ap"] == pytest.approx(1.0)
    # The same detections without the crowd box and the region: both become false positives.
    plain = _record([[0, 0, 40, 40]], [0])
    metrics = evaluate_detections(_tiny([plain]), [det])
    assert metrics["per_class"]["cat"]["fp"] == 1 and metrics["per_class"]["dog"]["fp"] == 1


# ---------------------------------------------------------------- empty cases


def test_no_ground_truth_anywhere():
    dataset = _tiny([_record(), _record(name="b.jpg")])
    metrics = evaluate_detections(dataset, [Detections([[0, 0, 10, 10]], [0.9], [1]), Detections.empty()])
    assert all(metrics[k] is None for k in ("map", "map50", "map75", "mar_100"))
    dog = metrics["per_class"]["dog"]
    assert dog["ap"] is None and dog["recall"] is None and dog["f1"] is None
    assert dog["fp"] == 1 and dog["precision"] == 0.0
    json.dumps(metrics, allow_nan=False)  # valid JSON: no NaN anywhere


def test_no_predictions_at_all():
    dataset = _tiny([_record([[10, 10, 60, 60]], [0]), _record(name="b.jpg")])
    metrics = evaluate_detections(dataset, [Detections.empty(), Detections.empty()])
    assert metrics["map"] == 0.0 and metrics["mar_100"] == 0.0  # there was something to find
    cat = metrics["per_class"]["cat"]
    assert cat["precision"] is None and cat["recall"] == 0.0 and cat["misses"] == 1
    json.dumps(metrics, allow_nan=False)


def test_no_images_and_no_classes():
    metrics = evaluate_detections(_tiny([]), [])
    assert metrics["num_images"] == 0 and metrics["map"] is None
    assert metrics["confusion_matrix"] == [[0, 0, 0], [0, 0, 0], [0, 0, 0]]
    metrics = evaluate_detections(Dataset([], [_record()], task="detect"), [Detections.empty()])
    assert metrics["map"] is None and metrics["per_class"] == {}


def test_rejects_mismatched_inputs():
    dataset = _tiny([_record([[10, 10, 60, 60]], [0])])
    with pytest.raises(ValueError, match="one per image"):
        evaluate_detections(dataset, [])
    with pytest.raises(ValueError, match="class index"):
        evaluate_detections(dataset, [Detections([[0, 0, 5, 5]], [0.5], [7])])
    with pytest.raises(ValueError, match="as many"):
        Detections([[0, 0, 5, 5]], [0.5, 0.4], [0])


# ---------------------------------------------------------------- outputs and speed


def test_write_detection_outputs(rbc, tmp_path):
    _, dataset = rbc
    predictions = _jittered_predictions(dataset, np.random.default_rng(4), tie_scores=False)
    metrics = evaluate_detections(dataset, predictions)
    write_detection_outputs(metrics, dataset, predictions, tmp_path / "eval")
    out = tmp_path / "eval"
    assert sorted(p.name for p in out.iterdir()) == [
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "pr_curves.png",
        "predictions.json",
    ]
    for png in ("confusion_matrix.png", "pr_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_lines = (out / "confusion_matrix.csv").read_text().splitlines()
    assert csv_lines[0] == "true \\ predicted,RBC-WBC,rbc,wbc,background"
    assert [int(v) for v in csv_lines[2].split(",")[1:]] == metrics["confusion_matrix"][1]

    doc = json.loads((out / "predictions.json").read_text())
    assert (
        doc["task"] == "detect" and doc["classes"] == dataset.classes and len(doc["images"]) == len(dataset)
    )
    first = doc["images"][0]
    assert {
        "path",
        "width",
        "height",
        "gt_boxes",
        "gt_labels",
        "pred_boxes",
        "pred_labels",
        "pred_scores",
        "errors",
    } <= set(first)
    assert min(s for img in doc["images"] for s in img["pred_scores"]) >= metrics["score_threshold"]
    # The per-image errors add up to the off-diagonal of the confusion matrix.
    matrix = np.array(metrics["confusion_matrix"])
    totals = {k: sum(img["errors"][k] for img in doc["images"]) for k in ("fp", "miss", "wrong_class")}
    assert totals["fp"] == matrix[-1].sum()
    assert totals["miss"] == matrix[:, -1].sum()
    assert totals["wrong_class"] == matrix[:-1, :-1].sum() - np.trace(matrix)


def test_write_outputs_without_ground_truth(tmp_path):
    dataset = _tiny([_record()])
    predictions = [Detections.empty()]
    metrics = evaluate_detections(dataset, predictions)
    write_detection_outputs(metrics, dataset, predictions, tmp_path)
    assert (tmp_path / "pr_curves.png").stat().st_size > 0
    assert json.loads((tmp_path / "predictions.json").read_text())["images"][0]["errors"] == {
        "fp": 0,
        "miss": 0,
        "wrong_class": 0,
    }


def test_hundred_images_thousand_detections_evaluate_whole(rbc):
    # Its speed is a benchmark's business (no timed unit tests); here: every image and class counted.
    _, dataset = rbc
    records = (dataset.records * 4)[:100]
    big = Dataset(dataset.classes, records, task="detect")
    predictions = _jittered_predictions(big, np.random.default_rng(5), tie_scores=False)
    assert sum(len(p) for p in predictions) > 1000
    metrics = evaluate_detections(big, predictions)
    assert 0.0 < metrics["map"] <= metrics["map50"] <= 1.0
    missing = evaluate_detections(big, predictions[:50] + [Detections.empty()] * 50)
    assert missing["map50"] < metrics["map50"]  # the 50 images left without detections count as misses
