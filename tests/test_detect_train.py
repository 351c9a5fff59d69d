"""Detection end to end on a tiny real subset of rbc_roboflow_coco: train, eval, resume, reload, CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from rich.console import Console

from lanner import api
from lanner.config import make_config
from lanner.data.formats import read_dataset, write_dataset
from lanner.data.records import Dataset
from lanner.engine.checkpoint import load_checkpoint
from lanner.engine.history import overfitting_start, read_history
from lanner.engine.trainer import Trainer, TrainState
from lanner.errors import ConfigError
from lanner.eval.error_breakdown import KINDS
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
def training(tiny_rbc, tmp_path_factory) -> tuple[Path, str]:
    """The trained run (3 of its 8 training images scored each epoch: --eval-train 3) and its console."""
    run = tmp_path_factory.mktemp("runs") / "det"
    os.environ["LANNER_CACHE"] = str(run.parent / "cache")
    config = make_config({"data": str(tiny_rbc), "run": str(run), "epochs": 1, "eval_train": 3, **TINY})
    out = io.StringIO()
    run = api.train(config, Console(file=out, width=200, color_system=None))
    return run, out.getvalue()


@pytest.fixture(scope="module")
def trained(training) -> Path:
    return training[0]


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


def test_eval_train_scores_training_images_and_the_overfitting_note(training):
    """--eval-train: history.csv has train_map beside val_map, printed each epoch; the trainer's
    over-fitting note fires on this run's own rows once val stalls while train_map climbs."""
    run, console = training
    row = read_history(run / "history.csv")[0]
    for name in ("map", "map50", "map75"):
        assert 0.0 <= float(row[f"train_{name}"]) <= 1.0, row  # scored (a number), not blank or nan
    assert "train_map " in console and "val_map " in console
    assert "over-fitting" not in console  # one epoch: nothing to judge yet
    # The trainer's own state (as checkpointed), its epoch continued: val_map best at epoch 2, then
    # 3 epochs without gain while train_map climbs.
    state = TrainState.from_dict(load_checkpoint(run / "checkpoints" / "last.ckpt")["train_state"])
    assert state.monitor == "val_map" and isinstance(state.history[0]["train_map"], float)
    val, train = [0.2, 0.4, 0.35, 0.38, 0.3], [0.2, 0.45, 0.6, 0.7, 0.8]
    state.history = [
        {**state.history[0], "epoch": e + 1, "val_map": v, "train_map": t}
        for e, (v, t) in enumerate(zip(val, train, strict=True))
    ]
    assert overfitting_start(state.history[:4], state.monitor) is None
    out = io.StringIO()
    stand_in = SimpleNamespace(
        state=state, console=Console(file=out, width=300, color_system=None), _overfitting_told=False
    )
    Trainer._note_overfitting(stand_in)
    Trainer._note_overfitting(stand_in)  # said once
    assert out.getvalue().strip() == (
        "over-fitting from epoch 3: val_map has not improved since epoch 2 while train_map kept improving "
        "(more data, more augmentation or fewer epochs may help)"
    )


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
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["split"] == "val"
    # The TIDE error breakdown of a plain eval: every kind, numbers, and the block on the console.
    errors = metrics["errors"]
    for key in ("dap50", "dap"):
        assert set(errors[key]) == set(KINDS), key
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in errors[key].values()), errors[key]
    assert set(errors["counts"]) == set(KINDS) and all(isinstance(v, int) for v in errors["counts"].values())
    assert set(errors["per_class"]) == {"rbc", "wbc"}
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("errors (TIDE)"))
    assert lines[head].split()[2:] == [k[:8] for k in KINDS]
    for row, key in zip(lines[head + 1 : head + 4], ("mAP@.5 +", "mAP +", "count"), strict=True):
        assert row.startswith(key) and len(row[20:].split()) == len(KINDS), row
    assert lines[head + 3].split()[1:] == [str(errors["counts"][k]) for k in KINDS]
    assert lines[head + 1].split()[2:] == [f"{errors['dap50'][k]:.4f}" for k in KINDS]
    # --score-threshold X overrides the run's per-class thresholds in predict too.
    chosen = json.loads((trained / "thresholds.json").read_text())["classes"]
    given = f"{min([0.05] + [e['threshold'] for e in chosen.values() if e['threshold']]) / 2:.3g}"
    pred, low = tmp_path / "pred", float(given)
    out = lanner(
        "predict", str(trained), str(tiny_rbc / "test"), "--out", str(pred), "--score-threshold", given
    )
    assert "4 image(s)" in out and f"at score >= {low:g} " in out
    doc = json.loads((pred / "detections.json").read_text())
    assert doc["class_thresholds"] == pytest.approx({"rbc": low, "wbc": low})
    scores = [s for img in doc["images"] for s in img["scores"]]  # rounded to 4 places
    assert scores and min(scores) >= low - 5e-5
    # coco.json names the predicted images where they are (outside pred/): an explicit opt-in to read.
    kept = read_dataset(pred / "coco.json", allow_outside_root=True).records
    assert len(kept) == 4 and sum(r.num_boxes for r in kept) == len(scores)
