"""The TIDE error breakdown: one error of each kind built by hand, and parity with the tidecv package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lanner.data.detections import Detections
from lanner.data.formats import read_dataset
from lanner.data.records import Dataset, ImageRecord
from lanner.eval.error_breakdown import KINDS, error_breakdown

G1, G2 = [0, 0, 100, 100], [200, 0, 300, 100]
FAR = [400, 300, 440, 340]  # overlaps nothing
SHIFTED = [55, 0, 155, 100]  # IoU 45/155 = 0.29 with G1: a poor box
NEAR_G1 = [5, 0, 105, 100]  # IoU 95/105 = 0.90 with G1


def _case(gt: list, preds: list) -> tuple[Dataset, list[Detections]]:
    """One image; ``gt`` (box, class), ``preds`` (box, class, score); classes a=0, b=1."""
    record = ImageRecord(
        Path("case.png"), 500, 400,
        boxes=np.array([b for b, _ in gt], float).reshape(-1, 4), labels=np.array([c for _, c in gt], int),
    )  # fmt: skip
    det = Detections([b for b, _, _ in preds], [s for _, _, s in preds], [c for _, c, _ in preds])
    return Dataset(["a", "b"], [record], "detect"), [det]


CASES = {
    # kind: (ground truth, predictions, dAP@.5 when fixed: TIDE's 101-point AP worked out by hand)
    "background": ([(G1, 0)], [(FAR, 0, 0.95), (G1, 0, 0.9)], 0.5),  # AP .5 -> 1
    "localisation": ([(G1, 0)], [(SHIFTED, 0, 0.9)], 1.0),  # AP 0 -> 1
    "classification": ([(G1, 0)], [(G1, 1, 0.9)], 1.0),  # a: 0, b (no gt): 0 -> a: 1, b gone
    "both": ([(G1, 0)], [(SHIFTED, 1, 0.9), (G1, 0, 0.5)], 0.5),  # a: 1, b: 0 -> b gone
    # a: precision 1, .5, .67 at recall .5, .5, 1 -> (51 x 1 + 50 x 2/3) / 101
    "duplicate": (
        [(G1, 0), (G2, 0)],
        [(G1, 0, 0.9), (NEAR_G1, 0, 0.8), (G2, 0, 0.7)],
        1 - (51 + 100 / 3) / 101,
    ),
    "missed": ([(G1, 0), (G2, 0)], [(G1, 0, 0.9)], 1 - 51 / 101),  # recall stops at .5
}


@pytest.mark.parametrize("kind", list(CASES))
def test_one_error_of_each_kind(kind):
    gt, preds, expected = CASES[kind]
    errors = error_breakdown(*_case(gt, preds))
    assert errors["counts"] == {k: int(k == kind) for k in KINDS}
    assert errors["dap50"][kind] == pytest.approx(expected, abs=1e-9)
    assert all(v == 0 for k, v in errors["dap50"].items() if k != kind)
    owner = "b" if kind in ("classification", "both") else "a"  # a prediction counts for its class
    assert errors["per_class"][owner][kind] == 1


def _noisy_predictions(dataset: Dataset, rng: np.random.Generator) -> list[Detections]:
    """Predictions made from the ground truth with every kind of error: jittered, shifted, wrong class,
    duplicated, dropped, and boxes on nothing, with random scores."""
    out = []
    for r in dataset.records:
        boxes, labels = [], []
        for box, label in zip(r.boxes, r.labels, strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            roll = rng.random()
            if roll < 0.15:
                continue  # missed
            shift = rng.uniform(0.3, 0.7) if roll < 0.3 else rng.uniform(-0.08, 0.08)
            boxes.append(box + np.array([shift * w, 0, shift * w, 0]))
            labels.append(1 - label if roll > 0.9 else label)
            if rng.random() < 0.1:
                boxes.append(box + rng.uniform(-0.1, 0.1) * np.array([w, h, w, h]))
                labels.append(label)
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, r.width - 30), rng.uniform(0, r.height - 30)
            boxes.append(np.array([x, y, x + 30, y + 30]))
            labels.append(int(rng.integers(0, 2)))
        n = len(boxes)
        out.append(Detections(np.array(boxes).reshape(-1, 4), rng.random(n), np.array(labels, int)))
    return out


def test_equals_tidecv_on_real_boxes(shared_data):
    from tidecv import TIDE, Data
    from tidecv.errors import main_errors as tide_errors

    full = read_dataset(shared_data / "rbc_roboflow_coco")
    dataset = Dataset(full.classes, [r for r in full.records if r.split == "val"][:30], "detect")
    predictions = _noisy_predictions(dataset, np.random.default_rng(0))
    gt, pred = Data("gt"), Data("pred")
    for i, (r, det) in enumerate(zip(dataset.records, predictions, strict=True)):
        for box, label in zip(r.boxes, r.labels, strict=True):
            gt.add_ground_truth(i, int(label), [box[0], box[1], box[2] - box[0], box[3] - box[1]])
        for box, score, label in zip(*det, strict=True):
            pred.add_detection(
                i, int(label), float(score), [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            )
    run = TIDE().evaluate(gt, pred, mode=TIDE.BOX)
    ref_dap = {kind.short_name: v / 100 for kind, v in run.fix_main_errors().items()}
    ref_counts = {kind.short_name: n for kind, n in run.count_errors().items()}
    names = {"Cls": "classification", "Loc": "localisation", "Both": "both", "Dupe": "duplicate",
             "Bkg": "background", "Miss": "missed"}  # fmt: skip
    kinds = ("BackgroundError", "BoxError", "ClassError", "DuplicateError", "MissedError", "OtherError")
    assert {getattr(tide_errors, k) for k in kinds} == set(run.count_errors())
    ours = error_breakdown(dataset, predictions)
    assert ours["tide_map50"] == pytest.approx(run.ap / 100, abs=1e-9)
    assert {names[k]: v for k, v in ref_counts.items()} == ours["counts"]
    assert all(v > 0 for v in ours["counts"].values())  # every kind is exercised
    for short, kind in names.items():
        assert ours["dap50"][kind] == pytest.approx(ref_dap[short], abs=1e-9), kind
