"""Detection end to end on a tiny real subset of rbc_roboflow_coco: train, eval, resume, reload, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lanner import api
from lanner.config import make_config
from lanner.data.formats import read_dataset, write_dataset
from lanner.data.records import Dataset
from lanner.engine.history import read_history
from lanner.errors import ConfigError
from lanner.tasks.detect.setup import load_detection_data
from lanner.tasks.loading import load_run

TINY = {"model": "fcos_test_resnet", "image_size": 96, "batch_size": 4, "augment": "light"}


def tiny_subset(shared_data: Path, out: Path) -> Path:
    """8 train (one with its boxes removed: a negative), 4 val and 4 test images, COCO layout."""
    full = read_dataset(shared_data / "rbc_roboflow_coco")
    picked = []
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        picked += [r for r in full.records if r.split == split][:n]
    negative = picked[0]
    negative.boxes, negative.labels = negative.boxes[:0], negative.labels[:0]
    negative.iscrowd = negative.iscrowd[:0]
    write_dataset(Dataset(full.classes, picked, "detect", format="coco"), "coco", out)
    return out


@pytest.fixture(scope="module")
def tiny_rbc(shared_data, tmp_path_factory) -> Path:
    return tiny_subset(shared_data, tmp_path_factory.mktemp("data") / "rbc")


@pytest.fixture(scope="module")
def trained(tiny_rbc, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "det"
    os.environ["LANNER_CACHE"] = str(run.parent / "cache")
    config = make_config({"data": str(tiny_rbc), "run": str(run), "epochs": 1, **TINY})
    return api.train(config)


def test_training_writes_a_detection_run(trained):
    for name in (
        "config.yaml",
        "history.csv",
        "split.csv",
        "data_check.json",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "metrics.json",
        "eval/predictions.json",
        "eval/confusion_matrix.csv",
        "eval/pr_curves.png",
    ):
        assert (trained / name).exists(), name
    history = read_history(trained / "history.csv")
    assert len(history) == 1
    assert {"val_map", "val_map50", "val_loss", "train_loss"} <= set(history[0])
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["task"] == "detect" and metrics["split"] == "test" and metrics["num_images"] == 4
    assert metrics["classes"] == ["rbc", "wbc"] and "map50" in metrics


def test_detection_checkpoint_reloads(trained):
    loaded = load_run(trained)
    assert loaded.meta.task == "detect" and loaded.classes == ["rbc", "wbc"]
    assert loaded.meta.get("image_size") == 96 and not loaded.model.training
    with torch.no_grad():
        out = loaded.model([torch.rand(3, 96, 96)])
    assert set(out[0]) == {"boxes", "scores", "labels"}


def test_per_class_thresholds_are_chosen_on_val_and_used(trained, tiny_rbc, tmp_path):
    saved = json.loads((trained / "thresholds.json").read_text())
    assert saved["split"] == "val" and set(saved["classes"]) == {"rbc", "wbc"}
    metrics = json.loads((trained / "metrics.json").read_text())  # the test split, at val's thresholds
    chosen = {n: 0.25 if e["threshold"] is None else e["threshold"] for n, e in saved["classes"].items()}
    assert {n: c["threshold"] for n, c in metrics["per_class"].items()} == pytest.approx(chosen)
    api.predict(trained, [str(tiny_rbc / "test")], tmp_path / "pred", format="coco")
    doc = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert doc["class_thresholds"] == pytest.approx(chosen)
    assert all(
        s >= chosen[c] for img in doc["images"] for s, c in zip(img["scores"], img["labels"], strict=True)
    )
    forced = api.evaluate(trained, split="test", report=False, score_threshold=0.9)
    assert all(c["threshold"] == 0.9 for c in forced["per_class"].values())


def test_eval_on_several_splits_and_another_dataset(trained, tiny_rbc):
    metrics = api.evaluate(trained, split="val,test", report=False)
    assert metrics["split"] == "val+test" and metrics["num_images"] == 8
    assert json.loads((trained / "metrics.json").read_text())["split"] == "val+test"
    other = api.evaluate(trained, str(tiny_rbc), split="train", report=False)
    assert other["num_images"] == 8


def test_resume_continues_the_run(trained):
    # The cosine schedule ended at LR ~0: more epochs need an LR, and say so rather than train nothing.
    with pytest.raises(ConfigError, match="would not train; give the LR for them, e.g. --lr"):
        api.resume(trained, epochs=2, evaluate_after=False)
    api.resume(trained, epochs=2, lr=5e-4, evaluate_after=False)
    history = read_history(trained / "history.csv")
    assert [int(float(row["epoch"])) for row in history] == [1, 2]
    assert np.isfinite(float(history[1]["val_loss"]))


def test_keep_only_some_classes(tiny_rbc):
    config = make_config({"data": str(tiny_rbc), "classes": ["wbc"], "rename": {"wbc": "white"}})
    full, kept = read_dataset(tiny_rbc), load_detection_data(config)
    assert kept.classes == ["white"] and len(kept.records) == len(
        full.records
    )  # images without wbc: negatives
    wbc = full.classes.index("wbc")
    assert sum(r.num_boxes for r in kept.records) == sum(int((r.labels == wbc).sum()) for r in full.records)
    assert all((r.labels == 0).all() for r in kept.records)


def test_eval_and_predict_through_the_cli(trained, tiny_rbc, tmp_path):
    env = {**os.environ, "COLUMNS": "200"}

    def lanner(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "lanner", *args],
            cwd=tmp_path,
            env=env,
            text=True,
            capture_output=True,
            check=True,
        )
        return done.stdout

    out = lanner("eval", str(trained), "--split", "val", "--no-report")
    assert "evaluation on split val (4 images)" in out and "mAP@.5" in out
    assert json.loads((trained / "metrics.json").read_text())["split"] == "val"
    out = lanner("predict", str(trained), str(tiny_rbc / "test"), "--out", str(tmp_path / "pred"))
    assert "4 image(s)" in out
    # coco.json names the predicted images where they are (outside pred/): an explicit opt-in to read.
    assert len(read_dataset(tmp_path / "pred" / "coco.json", allow_outside_root=True).records) == 4
