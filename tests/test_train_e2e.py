"""End-to-end: real images on disk, real training, through the `lanner` command and the API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import write_digit_folders

from lanner import api
from lanner.config import make_config
from lanner.engine.checkpoint import load_checkpoint
from lanner.engine.history import read_history

TINY = ["--model", "test_resnet", "--image-size", "16", "--no-hflip", "--augment", "light"]


def lanner(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "LANNER_CACHE": str(cwd / "cache"), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "lanner", *args], cwd=cwd, capture_output=True, text=True, check=check, env=env
    )


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return write_digit_folders(tmp_path_factory.mktemp("data") / "digits", per_class=16)


def test_train_eval_predict_through_the_cli(digits, tmp_path):
    run = tmp_path / "run"
    out = lanner(
        # TINY less its `--augment light`: the default, auto, picks light for a 3-epoch run and says so
        "train",
        str(digits),
        "--run",
        str(run),
        "--epochs",
        "3",
        "--batch-size",
        "8",
        *TINY[:-2],
        cwd=tmp_path,
    )
    # 16 images per class, 20% of each class drawn for validation -> 13 x 3 = 39 training images.
    assert "epoch = 39 images = 5 steps of batch 8" in out.stdout
    assert "augmentation: light (--augment auto: 3 planned epochs" in out.stdout
    # device auto: the GPU and bf16 where there is one (seen on an H100), else the CPU in float32.
    expected = "device cuda, precision bf16" if torch.cuda.is_available() else "device cpu, precision 32"
    assert expected in out.stdout and f"run directory: {run}" in out.stdout
    for name in (
        "config.yaml",
        "history.csv",
        "segments.json",
        "split.csv",
        "data_check.json",
        "schedule.png",
        "plots/curves.png",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "metrics.json",
        "eval/confusion_matrix.csv",
        "eval/confusion_matrix.png",
        "eval/predictions.json",
    ):
        assert (run / name).is_file(), name
    history = read_history(run / "history.csv")
    assert [int(h["epoch"]) for h in history] == [1, 2, 3]
    assert {"lr", "train_loss", "val_loss", "val_acc", "epoch_time_s", "images_per_s"} <= set(history[0])
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")  # weights_only=True inside
    assert ckpt["meta"]["classes"] == ["digit0", "digit1", "digit7"]
    assert ckpt["meta"]["preprocessing"]["image_size"] == 16 and ckpt["lanner_version"]
    assert ckpt["train_state"]["epoch"] == 3 and len(ckpt["train_state"]["history"]) == 3
    assert yaml.safe_load((run / "config.yaml").read_text())["model"] == "test_resnet"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["num_images"] == 9 and 0 <= metrics["accuracy"] <= 1

    preds = tmp_path / "preds.csv"
    images = sorted((digits / "digit7").glob("*.png"))[:3]
    lanner(
        "predict",
        str(run),
        str(images[0]),
        str(digits / "digit1"),
        str(digits / "digit0" / "00*.png"),
        "--out",
        str(preds),
        "--topk",
        "2",
        cwd=tmp_path,
    )
    rows = preds.read_text().splitlines()
    assert rows[0] == "path,label,score,topk,confident,error" and len(rows) == 1 + 1 + 16 + 10
    assert all(r.split(",")[1] in ("digit0", "digit1", "digit7") for r in rows[1:])


def test_ctrl_c_saves_and_resume_reproduces_the_uninterrupted_run(tmp_path):
    data = write_digit_folders(tmp_path / "digits", per_class=40)
    args = [
        "--epochs",
        "6",
        "--batch-size",
        "2",
        "--lr",
        "0.01",
        "--schedule",
        "cosine",
        "--warmup",
        "1",
        *TINY,
    ]
    full, cut = tmp_path / "full", tmp_path / "cut"
    lanner("train", str(data), "--run", str(full), *args, "--no-eval", cwd=tmp_path)

    env = {**os.environ, "LANNER_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lanner", "train", str(data), "--run", str(cut), *args, "--no-eval"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    while not (cut / "history.csv").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert f"lanner resume {cut}" in output
    saved = load_checkpoint(cut / "checkpoints" / "last.ckpt")["train_state"]
    assert 1 <= saved["epoch"] < 6 and saved["epoch"] * 48 + saved["step_in_epoch"] == saved["step"]

    out = lanner("resume", str(cut), "--no-eval", cwd=tmp_path)
    assert "no changes" in out.stdout
    a, b = read_history(full / "history.csv"), read_history(cut / "history.csv")
    assert [r["epoch"] for r in b] == [str(i) for i in range(1, 7)]
    assert [float(r["lr"]) for r in a] == pytest.approx([float(r["lr"]) for r in b], rel=1e-9)
    # Same batches, same augmentations, same optimizer state: the interrupted run trains the same model.
    # (the interrupted epoch too: the checkpoint carried its partial loss; history.csv keeps 6 digits)
    assert [float(r["train_loss"]) for r in a] == pytest.approx([float(r["train_loss"]) for r in b], rel=1e-5)
    assert len(json.loads((cut / "segments.json").read_text())) == 1

    # Now change the LR and the length: a new segment, and the optimizer really uses the new LR.
    out = lanner(
        "resume",
        str(cut),
        "--lr",
        "0.0123",
        "--epochs",
        "7",
        "--schedule",
        "constant",
        "--no-eval",
        cwd=tmp_path,
    )
    assert "lr 0.01 -> 0.0123" in out.stdout
    ckpt = load_checkpoint(cut / "checkpoints" / "last.ckpt")
    assert {g["lr"] for g in ckpt["optimizer"]["param_groups"]} == {0.0123}
    segments = json.loads((cut / "segments.json").read_text())
    assert (
        len(segments) == 2 and segments[1]["start_epoch"] == 6 and segments[1]["changes"]["epochs"] == [6, 7]
    )
    history = read_history(cut / "history.csv")
    assert len(history) == 7 and history[-1]["segment"] == "1" and float(history[-1]["lr"]) == 0.0123


def test_early_stopping_time_budget_and_broken_files(tmp_path, digits, capsys):
    data = tmp_path / "messy"
    write_digit_folders(data, per_class=12)
    (data / "digit1" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    config = make_config(
        {
            "data": str(data),
            "run": str(tmp_path / "stop"),
            "model": "test_resnet",
            "image_size": 16,
            "epochs": 8,
            "lr": 0.0,
            "schedule": "constant",
            "patience": 2,
            "batch_size": 8,
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    run = api.train(config, evaluate_after=False)
    history = read_history(run / "history.csv")
    assert len(history) == 3  # LR 0: val_acc never improves after epoch 1, patience 2 stops after epoch 3
    check = json.loads((run / "data_check.json").read_text())
    assert [i["path"].endswith("truncated.jpg") for i in check["issues"]] == [True]

    timed = make_config(
        {
            "data": str(data),
            "run": str(tmp_path / "timed"),
            "model": "test_resnet",
            "image_size": 16,
            "time": "8s",
            "batch_size": 4,
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    run = api.train(timed, evaluate_after=False)
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["train_state"]
    assert state["segments"][0]["reason"] == "timed"
    # The schedule ends where the budget does: the planned steps, the last epoch possibly partial.
    seg, history = state["segments"][0], read_history(run / "history.csv")
    assert (state["total_epochs"] - 1) * seg["steps_per_epoch"] < seg["end_step"]
    assert seg["end_step"] <= state["total_epochs"] * seg["steps_per_epoch"]
    # Every planned epoch ran, and the last one to the plan's end or, on a loaded machine, a step or
    # two short of it: the clock ends a step that would overrun the budget (never a step past the plan).
    assert len(history) == state["total_epochs"]
    assert (state["total_epochs"] - 1) * seg["steps_per_epoch"] < state["step"] <= seg["end_step"]
    out = capsys.readouterr().out
    if "training ran slower than planned" in out:
        # A load spike (another test starting processes) slowed the last epochs past the plan: the run
        # ends at an epoch, says so and where its LR stood, instead of overrunning the budget.
        assert f"the run ends at epoch {len(history)}, step {state['step']} of the" in " ".join(out.split())
    else:
        assert float(history[-1]["lr"]) < 0.05 * seg["base_lr"]  # decayed to (nearly) zero at the end


def test_schedule_preview_before_training(tmp_path, digits):
    out = lanner(
        "schedule",
        str(digits),
        "--epochs",
        "4",
        "--schedule",
        "step",
        "--set",
        "schedule.step_size=2",
        "--lr",
        "0.1",
        "--batch-size",
        "8",
        "--out",
        str(tmp_path / "s.png"),
        cwd=tmp_path,
    )
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert "0.01" in out.stdout and "0.1" in out.stdout
    dry = lanner("train", str(digits), "--dry-run", "--epochs", "2", cwd=tmp_path)
    assert "cosine schedule" in dry.stdout and not (tmp_path / "runs").exists()
    bad = lanner("train", str(digits), "--set", "schedule.gama=2", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "did you mean 'schedule.gamma'" in bad.stdout


def test_sign_language_digits_train_and_eval(shared_data, tmp_path):
    """The real set, with its EXIF-rotated 3024x3024 photos and .JPG files, trains and evaluates."""
    torch.manual_seed(0)
    config = make_config(
        {
            "data": str(shared_data / "sign_language_digits_cls" / "Dataset"),
            "run": str(tmp_path / "r"),
            "model": "resnet18",
            "image_size": 32,
            "epochs": 2,
            "batch_size": 64,
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    run = api.train(config)
    check = json.loads((run / "data_check.json").read_text())
    assert check["num_images"] == 2062 and check["num_issues"] == 0 and check["num_classes"] == 10
    metrics = json.loads((run / "metrics.json").read_text())
    n_val = sum(1 for line in (run / "split.csv").read_text().splitlines() if line.endswith(",val"))
    assert metrics["split"] == "val" and metrics["num_images"] == n_val and "top5_accuracy" in metrics
    assert abs(n_val - 0.2 * 2062) < 10  # stratified: 20% of each class
    assert metrics["accuracy"] > 0.2  # two epochs at 32 px: clearly better than chance (0.1)
