"""Several processes training one run (DDP over gloo on the CPU: the same code path as NCCL on GPUs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import write_digit_folders

from lanner.engine.checkpoint import load_checkpoint
from lanner.engine.distributed import shard_batches


@pytest.mark.parametrize(("total", "world"), [(5, 2), (6, 3), (7, 4), (1, 2)])
def test_every_batch_of_an_epoch_goes_to_some_process_and_all_take_the_same_steps(total, world):
    shares = [shard_batches(total, 0, rank, world) for rank in range(world)]
    assert {len(s) for s in shares} == {-(-total // world)}  # same number of steps everywhere
    assert set().union(*shares) == set(range(total))  # the epoch is covered
    if total % world == 0:
        assert sorted(b for s in shares for b in s) == list(range(total))  # exactly once
    # resuming after k steps continues with the same batches
    assert shard_batches(total, 1, 0, world) == shares[0][1:]


def _lanner(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}  # rich wraps long lines at the terminal width
    return subprocess.run(
        [sys.executable, "-m", "lanner", *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


def test_two_processes_train_resume_and_evaluate_one_run(tmp_path):
    data = write_digit_folders(tmp_path / "digits", per_class=16)  # 39 train images: 5 batches of 8
    run = tmp_path / "run"
    tiny = ["--model", "test_resnet", "--image-size", "16", "--batch-size", "8", "--device", "cpu"]
    two = ["--devices", "2"]
    out = _lanner("train", str(data), "--run", str(run), "--epochs", "2", *two, *tiny, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "epoch = 39 images = 3 steps of batch 8 on each of 2 processes (batch 16 in all)" in out.stdout
    assert out.stdout.count("epoch 1/2:") == 1  # one process speaks
    assert json.loads((run / "hardware.json").read_text())["processes"] == 2
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    state = ckpt["train_state"]
    assert state["epoch"] == 2 and state["step"] == 2 * 3 and len(state["history"]) == 2
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])  # saved unwrapped
    assert (run / "eval" / "predictions.json").is_file()  # process 0 evaluated after training

    more = _lanner("resume", str(run), "--epochs", "3", "--lr", "5e-4", *two, "--no-eval", cwd=tmp_path)
    assert more.returncode == 0, more.stdout + more.stderr
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["train_state"]["step"] == 3 * 3

    single = _lanner("resume", str(run), "--epochs", "4", "--no-eval", cwd=tmp_path)
    assert single.returncode == 2 and "same number of processes (--devices)" in single.stdout

    timed = _lanner("train", str(data), "--time", "1m", "--devices", "2", *tiny, cwd=tmp_path)
    assert timed.returncode != 0 and "--time is not supported with several processes" in timed.stdout


def test_two_processes_keep_frozen_tensors_bit_identical_and_unfreeze_after_n_epochs(tmp_path):
    import timm
    from safetensors.torch import save_file

    data = write_digit_folders(tmp_path / "digits", per_class=8)
    torch.manual_seed(5)
    model = timm.create_model("test_resnet", num_classes=3)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp_path / "start.safetensors"))
    tiny = ["--model", "test_resnet", "--image-size", "16", "--batch-size", "4", "--device", "cpu"]
    common = [
        str(data),
        "--pretrained",
        str(tmp_path / "start.safetensors"),
        "--devices",
        "2",
        "--no-eval",
        *tiny,
    ]
    frozen = _lanner(
        "train", *common, "--run", str(tmp_path / "a"), "--freeze", "backbone", "--epochs=1", cwd=tmp_path
    )
    assert frozen.returncode == 0, frozen.stdout + frozen.stderr
    state = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")["state_dict"]
    backbone = [k for k in weights if not k.startswith("fc.")]  # BatchNorm running statistics included
    assert all(torch.equal(state[k], weights[k]) for k in backbone)
    assert not torch.equal(state["fc.weight"], weights["fc.weight"])  # the head trained

    # Unfrozen after epoch 1: DDP wraps the model again, so the backbone's gradients are averaged too.
    b = tmp_path / "b"
    later = _lanner("train", *common, "--run", str(b), "--freeze", "backbone:1", "--epochs=2", cwd=tmp_path)
    assert later.returncode == 0, later.stdout + later.stderr
    assert "epoch 2: backbone unfrozen, training all layers (segment 1)" in later.stdout
    state = load_checkpoint(b / "checkpoints" / "last.ckpt")["state_dict"]
    assert not all(torch.equal(state[k], weights[k]) for k in backbone if k.endswith(".weight"))
    segments = json.loads((b / "segments.json").read_text())
    assert [(s["reason"], s["start_epoch"]) for s in segments] == [("start", 0), ("unfreeze", 1)]
