"""Detect, then classify (tasks/two_stage): `lanner crops`, `predict/eval DET_RUN ... --classify CLS_RUN`.

Real data: the RBC test split (COCO). The detector is a one-class ("cell") untrained run, the classifier
a tiny one trained one epoch on the crops of the same split, so the labels (rbc, wbc) can only come
from the classifier.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import save_untrained_detector
from PIL import Image

from lanner import api, cli
from lanner.config import make_config
from lanner.data.formats import read_dataset
from lanner.data.images import open_image


@pytest.fixture(scope="module")
def rbc(shared_data) -> Path:
    return shared_data / "rbc_roboflow_coco" / "test"


@pytest.fixture(scope="module")
def crops(rbc, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("crops") / "cells"
    assert cli.run_cli(["crops", str(rbc), str(out), "--pad", "0.1", "--min-size", "16"]) == 0
    return out


@pytest.fixture(scope="module")
def runs(crops, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("two_stage")
    meta = {"task": "detect", "classes": ["cell"], "image_size": 64, "score_threshold": 0.0}
    detector = save_untrained_detector(root / "det", meta)
    values = {"data": str(crops), "run": str(root / "cls"), "model": "test_resnet", "image_size": 16,
              "epochs": 1, "batch_size": 32, "cache_dir": str(root / "cache"), "workers": 1,
              "eval_train": 0}  # fmt: skip
    return detector, api.train(make_config(values), evaluate_after=False)


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def test_crops_are_the_ground_truth_boxes_cut_from_their_images(rbc, crops):
    dataset = read_dataset(rbc)
    sides = [min(b[2] - b[0], b[3] - b[1]) for r in dataset.records for b in r.boxes]
    rows = _rows(crops / "crops.csv")
    assert len(rows) == sum(s >= 16 for s in sides) and 0 < len(rows) < len(sides)  # some are too small
    written = sorted(p.relative_to(crops).as_posix() for p in crops.rglob("*.png"))
    assert written == sorted(r["crop"] for r in rows)
    assert {r["label"] for r in rows} == {"rbc", "wbc"}
    clipped = [r for r in rows if 1.1 * float(r["box_xmin"]) - 0.1 * float(r["box_xmax"]) < 0]
    assert clipped and all(r["crop_xmin"] == "0" for r in clipped)  # padding stops at the image edge
    for row in rows[:: max(1, len(rows) // 12)] + clipped[:2]:
        x0, y0, x1, y1 = (float(row[k]) for k in ("box_xmin", "box_ymin", "box_xmax", "box_ymax"))
        source = open_image(row["source"])
        want = (max(0, math.floor(x0 - 0.1 * (x1 - x0))), max(0, math.floor(y0 - 0.1 * (y1 - y0))),
                min(source.width, math.ceil(x1 + 0.1 * (x1 - x0))),
                min(source.height, math.ceil(y1 + 0.1 * (y1 - y0))))  # fmt: skip
        assert tuple(int(row[k]) for k in ("crop_xmin", "crop_ymin", "crop_xmax", "crop_ymax")) == want
        crop = np.asarray(Image.open(crops / row["crop"]).convert("RGB"))
        assert np.array_equal(crop, np.asarray(source.crop(want))), row["crop"]
        assert Path(row["crop"]).parts[0] == row["label"]
    assert {r["pad"] for r in rows} == {"0.1"}
    assert read_dataset(crops).format == "folder"  # OUT is a classification dataset as it stands


def test_crops_refuse_bad_input(rbc, crops, shared_data, tmp_path, capsys):
    classification = shared_data / "trashnet_112_cls"
    assert cli.run_cli(["crops", str(classification), str(tmp_path / "a")]) == 2
    assert "`lanner crops` needs boxes" in " ".join(capsys.readouterr().out.split())
    assert cli.run_cli(["crops", str(rbc), str(crops)]) == 2  # OUT holds the earlier crops
    assert "not an empty folder" in " ".join(capsys.readouterr().out.split())
    assert cli.run_cli(["crops", str(rbc), str(tmp_path / "b"), "--min-size", "5000"]) == 2
    assert "lower --min-size" in " ".join(capsys.readouterr().out.split())


def test_predict_classify_relabels_every_detected_box_with_both_scores(runs, rbc, tmp_path):
    detector, classifier = runs
    image = sorted(rbc.glob("*.jpg"))[0]
    alone = api.predict(detector, [str(image)], tmp_path / "alone", device="cpu")[0]
    out, drawn = tmp_path / "two", tmp_path / "drawn"
    args = ["predict", str(detector), str(image), "--classify", str(classifier), "--device", "cpu"]
    assert cli.run_cli([*args, "--out", str(out), "--format", "csv", "--render", str(drawn)]) == 0
    (entry,) = json.loads((out / "detections.json").read_text())["images"]
    assert len(entry["boxes"]) == len(alone["boxes"]) > 0
    assert np.allclose(entry["boxes"], alone["boxes"], atol=6e-3) and set(entry["det_labels"]) == {"cell"}
    assert np.allclose(entry["det_scores"], alone["scores"], atol=1e-4)
    assert set(entry["labels"]) <= {"rbc", "wbc"}
    product = np.array(entry["det_scores"]) * np.array(entry["cls_scores"])
    assert np.allclose(entry["scores"], product, atol=2e-4)
    # the classifier's own prediction on the same crop, written as a file, gives the same label and score
    region = _region(entry["boxes"][0], open_image(image))
    open_image(image).crop(region).save(tmp_path / "crop.png")
    (own,) = api.predict(classifier, [str(tmp_path / "crop.png")], tmp_path / "own.csv", device="cpu")
    assert own["label"] == entry["labels"][0] and abs(own["score"] - entry["cls_scores"][0]) < 1e-3
    rows = _rows(out / "two_stage.csv")
    assert len(rows) == len(entry["boxes"]) and {"det_score", "cls_score"} <= set(rows[0])
    assert len(_rows(out / "boxes.csv")) == len(entry["boxes"]) and (drawn / f"{image.stem}.jpg").is_file()


def _region(box, img) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    dx, dy = 0.1 * (x1 - x0), 0.1 * (y1 - y0)  # the pad of the classifier's crops.csv
    left, top = max(0, math.floor(x0 - dx)), max(0, math.floor(y0 - dy))
    return (
        left,
        top,
        max(left + 1, min(img.width, math.ceil(x1 + dx))),
        max(top + 1, min(img.height, math.ceil(y1 + dy))),
    )


def test_eval_classify_scores_the_two_stages_beside_the_detector_alone(runs, rbc):
    detector, classifier = runs
    metrics = api.evaluate(detector, str(rbc), classify=classifier, device="cpu")
    folder = detector / "two_stage"
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["classes"] == ["rbc", "wbc"] and saved["map"] == metrics["map"]
    alone = saved["detector_alone"]
    assert alone["class_agnostic"] and alone["classes"] == ["cell"] and alone["map"] is not None
    shown = json.loads((folder / "eval" / "predictions.json").read_text())["images"]
    assert len(shown) == metrics["num_images"] and all(
        len(i["pred_det_scores"]) == len(i["pred_cls_scores"]) == len(i["pred_boxes"]) for i in shown
    )
    assert json.loads((folder / "two_stage.json").read_text())["classifier"] == str(classifier)
    page = (folder / "report.html").read_text()  # its data: the metrics and the gallery's both scores
    assert '"detector_alone":{' in page and '"pred_cls_scores":[' in page
    assert not (detector / "metrics.json").exists()  # the detector's own evaluation is left alone


def test_classify_needs_a_detector_then_a_classifier(runs, rbc, capsys):
    detector, classifier = runs
    image = str(sorted(rbc.glob("*.jpg"))[0])
    assert cli.run_cli(["predict", str(detector), image, "--classify", str(detector)]) == 2
    assert "give a classifier run" in " ".join(capsys.readouterr().out.split())
    assert cli.run_cli(["eval", str(classifier), str(rbc), "--classify", str(classifier)]) == 2
    assert "needs a detector run first" in " ".join(capsys.readouterr().out.split())
