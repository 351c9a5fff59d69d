"""Detection from shards: a tiny real subset of rbc_roboflow_coco written as shards, streamed with the
cached path's augmentation (boxes moving with the pixels), resumed at the same sample, trained,
resumed, evaluated and used for prediction, by one process or two; the options shards cannot serve
are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from test_detect_train import tiny_subset

from lanner import api
from lanner.cli import run_cli
from lanner.config import make_config
from lanner.data.formats import read_dataset
from lanner.data.shard_index import read_index
from lanner.engine.checkpoint import load_checkpoint
from lanner.engine.history import read_history
from lanner.tasks.base import TrainRecipe
from lanner.tasks.detect.stream import StreamedDetectionTask, canvas_targets
from lanner.tasks.loading import load_run

QUIET = Console(quiet=True)
SIZE = 96


@pytest.fixture(scope="module")
def tiny_rbc(shared_data, tmp_path_factory) -> Path:
    """8 train (one without boxes), 4 val, 4 test real blood-cell images, COCO layout."""
    return tiny_subset(shared_data, tmp_path_factory.mktemp("data") / "rbc")


@pytest.fixture(scope="module")
def shards(tiny_rbc, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "rbc"
    api.shard(str(tiny_rbc), out, QUIET, image_size=SIZE, shard_size="3", workers=1)
    return out


def _task(shards: Path, **recipe) -> StreamedDetectionTask:
    recipe = {"batch_size": 3, "seed": 1, **recipe}
    return StreamedDetectionTask(
        index=read_index(shards), source=str(shards), recipe=TrainRecipe(**recipe), workers=2
    )


def test_stream_holds_the_original_boxes_on_the_stored_canvases(tiny_rbc, shards):
    """Without augmentation a streamed batch is the stored canvases with every box of the source
    image scaled onto them; val is held in memory with its boxes back in original pixels."""
    original = {r.path.name: r for r in read_dataset(tiny_rbc).records}
    task = _task(shards, augment="none", hflip=False)
    seen = 0
    for batch, number in task.streamed_batches(0):
        targets = [canvas_targets(m) for m in batch.annotations]
        images, model_targets = task.training_batch(batch.images, targets, 0, number)
        for i, meta in enumerate(batch.annotations):
            record = original[Path(meta["source"]).name]
            scale = SIZE / max(record.width, record.height)
            stored = torch.as_tensor(batch.images[i]).permute(2, 0, 1).float() / 255.0
            assert images[i].shape == (3, SIZE, SIZE) and torch.allclose(images[i], stored)
            np.testing.assert_allclose(model_targets[i]["boxes"].numpy(), record.boxes * scale, atol=1e-3)
            assert model_targets[i]["labels"].tolist() == record.labels.tolist()
            seen += 1
    assert seen == task.num_train_images == 8 and task.steps_per_epoch() == 3  # 3 + 3 + 2
    val = [task.dataset.records[i] for i in task.val_idx]
    assert len(val) == 4 and all(r.split == "val" for r in val)
    for r in val:
        np.testing.assert_allclose(r.boxes, original[r.path.name].boxes, atol=0.05)
        assert (r.width, r.height) == (original[r.path.name].width, original[r.path.name].height)
    assert task.image_size == SIZE and len(task.train_eval_idx) == 4  # as many training images as val


def test_a_resumed_streamed_epoch_continues_at_the_same_sample(shards):
    """From step k: the very tensors and boxes (augmented) of the uninterrupted epoch's steps k, k+1;
    with two processes, each one's share resumes alike and together they cover the epoch."""
    task = _task(shards, augment="default")
    full = list(task.train_batches(2))
    for skip in (1, 2):
        resumed = list(task.train_batches(2, skip=skip))
        assert len(resumed) == len(full) - skip
        for (x0, t0), (x1, t1) in zip(full[skip:], resumed, strict=True):
            assert all(torch.equal(a, b) for a, b in zip(x0, x1, strict=True))
            assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(t0, t1, strict=True))
    assert any(len(t["boxes"]) for _, targets in full for t in targets)
    later = list(task.train_batches(3))[0][0][0]
    assert not torch.equal(full[0][0][0], later)  # another epoch: another order or augmentation
    pairs = _task(shards, batch_size=2, augment="default")
    sources = []
    for rank in (0, 1):
        whole = list(pairs.train_batches(2, shard=(rank, 2)))
        assert len(whole) == pairs.steps_per_process(2) == 2  # 4 of the 8 samples each, in batches of 2
        later = list(pairs.train_batches(2, skip=1, shard=(rank, 2)))
        assert len(later) == 1 and all(
            torch.equal(a, b) for a, b in zip(whole[1][0], later[0][0], strict=True)
        )
        sources += [m["source"] for b, _ in pairs.streamed_batches(2, shard=(rank, 2)) for m in b.annotations]
    assert sorted(sources) == sorted({*sources}) and len(sources) == 8  # every sample once


def test_train_resume_eval_and_predict_from_detection_shards(tiny_rbc, shards, tmp_path):
    """`lanner train SHARDS` (task from the index) streams real epochs, validates with COCO mAP, resumes
    through the stream; eval of the run reads its test shards, predict takes image files."""
    run = tmp_path / "run"
    config = make_config(
        {"data": str(shards), "model": "fcos_test_resnet", "epochs": 1, "batch_size": 4, "workers": 1,
         "augment": "light", "run": str(run), "device": "cpu"}, "test",
    )  # fmt: skip
    api.train(config, QUIET, evaluate_after=False)
    api.resume(run, QUIET, epochs=2, lr=5e-4, evaluate_after=False)  # the schedule had ended
    history = read_history(run / "history.csv")
    assert [h["epoch"] for h in history] == ["1", "2"]
    assert {"val_map", "val_map50", "val_loss", "train_loss", "train_map"} <= set(history[0])
    assert all(np.isfinite(float(h["train_loss"])) for h in history)
    check = json.loads((run / "data_check.json").read_text())
    assert check["format"] == "lanner-shards" and check["task"] == "detect"
    assert check["images_per_split"] == {"train": 8, "val": 4, "test": 4}
    loaded = load_run(run)
    assert loaded.meta.task == "detect" and loaded.meta.get("image_size") == SIZE
    assert loaded.classes == ["rbc", "wbc"]
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["train_state"]["epoch"] == 2

    metrics = api.evaluate(run, console=QUIET, report=False)
    assert metrics["split"] == "test" and metrics["num_images"] == 4 and metrics["classes"] == ["rbc", "wbc"]
    assert metrics["per_class"]["rbc"]["support"] > 0 and "errors" in metrics
    assert (run / "eval" / "predictions.json").exists() and (run / "thresholds.json").exists()
    on_val = api.evaluate(run, console=QUIET, report=False, split="val")
    assert on_val["split"] == "val" and on_val["num_images"] == 4

    image = next(Path(tiny_rbc).rglob("*.jpg"))
    rows = api.predict(run, [str(image)], tmp_path / "pred", console=QUIET)
    assert len(rows) == 1 and rows[0]["path"] == str(image) and not rows[0].get("error")
    assert len(rows[0]["boxes"]) == len(rows[0]["scores"]) == len(rows[0]["labels"])


def test_what_detection_shards_cannot_do_is_refused_before_training(shards, tmp_path, capsys):
    run = str(tmp_path / "r")
    assert run_cli(["train", str(shards), "--tile", "64", "--run", run]) == 2
    said = _said(capsys)
    assert "--tile 64" in said and "96 px" in said
    assert run_cli(["train", str(shards), "--task", "classify", "--run", run]) == 2
    assert "detect shards; train them with --task detect" in _said(capsys)
    assert run_cli(["train", str(shards), "--image-size", "128", "--run", run]) == 2
    assert "written for 96 px" in _said(capsys)
    assert not (tmp_path / "r" / "history.csv").exists()


def _said(capsys) -> str:
    out = capsys.readouterr()
    return " ".join((out.out + out.err).split())  # rich wraps long lines


def test_two_processes_stream_their_own_shares_and_validate_in_parts(shards, tmp_path):
    """`--devices 2` (gloo on the CPU): each process streams half the epoch; the val mAP the two computed
    in parts is the one `lanner eval` of the checkpoint reads from the val shards alone."""
    run = tmp_path / "run"
    args = ["train", str(shards), "--model", "fcos_test_resnet", "--batch-size", "2", "--epochs", "1"]
    args += ["--lr", "3e-3", "--workers", "1", "--device", "cpu", "--devices", "2", "--run", str(run)]
    out = subprocess.run(
        [sys.executable, "-m", "lanner", *args, "--no-eval"], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "epoch = 8 images = 2 steps of batch 2 on each of 2 processes" in out.stdout, out.stdout
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["train_state"]
    assert state["step"] == 2 and len(state["history"]) == 1
    validated = state["history"][0]
    metrics = api.evaluate(run, split="val", console=QUIET, report=False)
    assert metrics["num_images"] == 4
    for key in ("map", "map50", "map75"):
        assert metrics[key] == pytest.approx(validated[f"val_{key}"], abs=1e-5)
