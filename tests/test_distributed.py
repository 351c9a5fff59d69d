"""Several processes training one run (DDP over gloo on the CPU: the same code path as NCCL on GPUs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import free_port, run_together, write_digit_folders

from lanner.demo_detect import write_digit_canvases
from lanner.engine.checkpoint import load_checkpoint
from lanner.engine.distributed import (
    Distributed,
    Part,
    first_host,
    from_environment,
    group_exit_code,
    rendezvous_environment,
    shard_batches,
    use_sync_batchnorm,
)
from lanner.engine.history import read_history
from lanner.errors import ConfigError
from lanner.models.registry import create_model
from lanner.tasks.loading import load_run


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


# ----------------------------------------------------------------------------------- detection, launchers


def _together(commands: list[list[str]], envs: list[dict], cwd) -> list[subprocess.CompletedProcess]:
    """Start the commands at once (the processes of one group) and wait for all of them."""
    return run_together(commands, envs, cwd)


def test_slurm_and_torchrun_variables_give_the_process_its_place():
    slurm = {
        "SLURM_PROCID": "3",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_NODELIST": "gpu[07-09,12],x1",
    }
    assert from_environment(slurm) == Distributed(rank=3, world=8, local_rank=1)
    assert from_environment({**slurm, "SLURM_STEP_NUM_TASKS": "4"}).world == 4  # srun's step, not the job
    torchrun = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0"}
    assert from_environment({**slurm, **torchrun}) == Distributed(1, 2, 0)  # torchrun's come first
    assert not from_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).enabled
    assert rendezvous_environment({**slurm, "SLURM_JOB_ID": "123"}) == {
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": "15123",
    }
    given = {**slurm, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "4000"}
    assert rendezvous_environment(given) == {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "4000"}
    assert first_host("node5") == "node5" and first_host("a[3-4]") == "a3"
    with pytest.raises(ConfigError, match="whole number"):
        from_environment({"SLURM_PROCID": "x", "SLURM_NTASKS": "2"})


@pytest.mark.parametrize(("n", "world"), [(3, 2), (7, 3), (1, 2), (0, 2)])
def test_validation_parts_cover_the_images_once_in_order(n, world):
    parts = [Part(Distributed(rank, world)).of(list(range(n))) for rank in range(world)]
    assert [x for part in parts for x in part] == list(range(n))  # rank order = the list's order
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_sync_batchnorm_is_on_for_detection_on_several_gpus_and_refused_on_the_cpu(tmp_path):
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    # detection asks for it by default (DetectionTask.sync_batchnorm_by_default), classification does not
    assert use_sync_batchnorm(None, True, cuda, 2) and not use_sync_batchnorm(None, False, cuda, 2)
    assert not use_sync_batchnorm(None, True, cpu, 2) and not use_sync_batchnorm(None, True, cuda, 1)
    assert not use_sync_batchnorm(False, True, cuda, 2) and use_sync_batchnorm(True, False, cuda, 2)
    # Refused before torchrun starts anything (no process group, no data read).
    out = _lanner("train", str(tmp_path), "--sync-bn", "--device", "cpu", "--devices", "2", cwd=tmp_path)
    assert out.returncode == 2 and "--sync-bn needs GPUs" in out.stdout and "Traceback" not in out.stderr
    assert "OMP_NUM_THREADS" not in out.stdout + out.stderr  # torchrun never started


def test_data_the_processes_refuse_exits_2_with_their_message_and_no_launcher_traceback(tmp_path):
    one = write_digit_folders(tmp_path / "one", labels=(3,), per_class=4)  # found only once data is read
    out = _lanner("train", str(one), "--run", "r", "--model", "test_resnet", "--devices", "2", cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "a classifier needs at least 2" in " ".join(out.stdout.split())
    assert "Traceback" not in out.stdout + out.stderr and "ChildFailedError" not in out.stdout + out.stderr
    assert group_exit_code([1, 2]) == 2 and group_exit_code([-2, 0]) == 130 and group_exit_code([-9]) == 1


def test_tiled_detection_under_srun_then_torchrun_validates_in_parts_like_one_process(tmp_path):
    """Two processes started as srun starts them (SLURM_* only, gloo on 127.0.0.1) train on tiles with the
    backbone frozen; `resume --devices 2` (torchrun) unfreezes it; the validation mAP the two processes
    computed in parts equals the one-process evaluation of the same checkpoint."""
    data = write_digit_canvases(tmp_path / "canvases", n_train=4, n_val=3, size=128, objects=(3, 5))
    run = tmp_path / "run"
    args = ["train", str(data), "--task", "detect", "--model", "fcos_test_resnet", "--tile", "64"]
    args += [
        "--batch-size",
        "4",
        "--lr",
        "3e-3",
        "--epochs",
        "1",
        "--freeze",
        "backbone:1",
        "--device",
        "cpu",
    ]
    args += ["--run", str(run), "--no-eval", "--no-hflip"]
    slurm = {"SLURM_NTASKS": "2", "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(free_port())}
    envs = [{**slurm, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)} for r in (0, 1)]
    first = _together([[sys.executable, "-m", "lanner", *args]] * 2, envs, tmp_path)
    assert [p.returncode for p in first] == [0, 0], first[0].stdout + first[0].stderr + first[1].stderr
    assert "on each of 2 processes" in first[0].stdout and first[1].stdout.strip() == ""  # one speaks

    more = _lanner("resume", str(run), "--epochs", "2", "--lr", "2e-3", "--devices", "2", cwd=tmp_path)
    assert more.returncode == 0, more.stdout + more.stderr
    assert "epoch 2: backbone unfrozen, training all layers" in more.stdout, more.stdout
    segments = json.loads((run / "segments.json").read_text())
    assert [s["reason"] for s in segments] == ["start", "resume", "unfreeze"]
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    # The one-process format: the bare model's keys, the run's state, the tiling in the metadata.
    model = create_model("detect", "fcos_test_resnet", num_classes=4, image_size=64)
    assert set(ckpt["state_dict"]) == set(model.state_dict())
    assert ckpt["train_state"]["epoch"] == 2 and ckpt["meta"]["tiling"]["tile"] == 64
    assert load_run(run, "last").meta.classes == ckpt["meta"]["classes"]  # loads where one process's would

    # What resume refuses is refused before torchrun starts (the cosine schedule ended at epoch 2).
    late = _lanner("resume", str(run), "--epochs", "3", "--devices", "2", cwd=tmp_path)
    assert late.returncode == 2 and "give the LR for them" in late.stdout and "OMP_NUM" not in late.stderr

    # Process 0 evaluated best.ckpt alone after training: the same mAP the two processes validated.
    history = ckpt["train_state"]["history"]  # history.csv's rows, as numbers
    best = history[ckpt["train_state"]["best_epoch"] - 1]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and max(row["val_map50"] for row in history) > 0
    for key in ("map", "map50", "map75"):
        assert metrics[key] == pytest.approx(best[f"val_{key}"], abs=1e-5)


def test_detection_with_a_time_budget_on_two_nodes_agrees_on_the_plan(tmp_path):
    """`torchrun --nnodes 2` simulated by two launchers (node 0 and 1, one process each) meeting on the
    loopback address; --time: process 0's plan and clock are everyone's (a disagreement would hang)."""
    data = write_digit_canvases(tmp_path / "canvases", n_train=4, n_val=2, size=96, objects=(2, 4))
    run = tmp_path / "run"
    port = str(free_port())
    lanner = ["train", str(data), "--task", "detect", "--model", "fcos_test_resnet", "--image-size", "64"]
    lanner += ["--batch-size", "2", "--time", "20s", "--device", "cpu", "--run", str(run), "--no-eval"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
    launch += ["--master-addr", "127.0.0.1", "--master-port", port]
    nodes = [[*launch, "--node-rank", str(n), "-m", "--", "lanner", *lanner] for n in (0, 1)]
    done = _together(nodes, [{}, {}], tmp_path)
    assert [p.returncode for p in done] == [0, 0], done[0].stdout + done[0].stderr + done[1].stderr
    out = done[0].stdout
    assert "on each of 2 processes" in out and "time budget 20s at" in out
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["train_state"]
    history = read_history(run / "history.csv")
    assert (
        state["segments"][0]["reason"] == "timed" and len(history) == state["epoch"] == state["total_epochs"]
    )
    assert "val_map" in history[-1] and "val_loss" in history[-1]  # validated (in parts) at the end
    assert state["wall_seconds"] < 60


# ------------------------------------------------------------------- the LR, trackers and transfer learning


def test_two_processes_choose_the_lr_once_track_once_and_start_from_a_run_with_other_classes(tmp_path):
    """`train --devices 2 --lr auto --track tensorboard --pretrained RUN` on data with a class of RUN
    dropped and two added: process 0 runs the range test and tells the other its choice (a collective:
    a process that missed it would hang or train on "auto"), process 0 alone tracks, and the heads of
    both processes start from RUN's rows of the classes both know."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from lanner import api
    from lanner.config import make_config

    tiny = {"model": "test_resnet", "image_size": 16, "batch_size": 8, "device": "cpu", "hflip": False}
    old = write_digit_folders(tmp_path / "old", labels=(0, 1, 7), per_class=8)
    first = make_config({"data": str(old), "run": str(tmp_path / "source"), "epochs": 1, **tiny})
    source = api.train(first, evaluate_after=False)  # one process: the run the new one starts from
    new = write_digit_folders(tmp_path / "new", labels=(0, 1, 3, 4), per_class=10)  # 7 gone, 3 and 4 new
    run = tmp_path / "run"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in tiny.items() if k != "hflip"]
    args = ["train", str(new), "--run", str(run), "--devices", "2", "--lr", "auto", "--track", "tensorboard"]
    args += ["--pretrained", str(source), "--epochs", "1", "--no-hflip", "--no-eval", *flags]
    out = _lanner(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "on each of 2 processes" in out.stdout

    # The LR: one range test (process 0's), one choice, the same in every record of it.
    assert out.stdout.count("LR range test:") == 1 and out.stdout.count("--lr auto:") == 1
    summary = json.loads((run / "lr_find.json").read_text())
    assert len((run / "lr_find.csv").read_text().splitlines()) == 1 + summary["steps"]
    chosen = yaml.safe_load((run / "config.yaml").read_text())["lr"]
    assert isinstance(chosen, float) and chosen == (summary["suggestion"] or 1e-3)
    assert f"--lr auto: {chosen:.2g}" in out.stdout
    assert json.loads((run / "segments.json").read_text())[0]["base_lr"] == pytest.approx(chosen)

    # The tracker: process 0's only, one event file, the chosen LR among its hyperparameters.
    assert out.stdout.count("tracking: writing TensorBoard events") == 1
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train_loss")] == [1]
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["lr"].number_value == pytest.approx(chosen)
    assert json.loads((run / "tracking.json").read_text()) == {"tensorboard": {"logdir": "tb"}}

    # Class surgery: the classes both know keep their rows, 7 is dropped, 3 and 4 start fresh.
    classes = ["digit0", "digit1", "digit3", "digit4"]
    surgery = json.loads((run / "pretrained.json").read_text())["classes"]
    assert surgery["from"] == {"digit0": "digit0", "digit1": "digit1", "digit3": None, "digit4": None}
    assert surgery["dropped"] == ["digit7"]
    assert out.stdout.count("class heads: kept digit0, digit1; new digit3, digit4") == 1
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["meta"]["classes"] == classes and ckpt["state_dict"]["fc.weight"].shape[0] == len(classes)
    assert ckpt["train_state"]["epoch"] == 1 and not list(run.glob(".*.tmp"))


def test_lr_find_in_a_group_of_two_runs_in_process_0_alone(tmp_path):
    """Under torchrun's variables (or srun's), `lanner lr-find` runs the range test in process 0 as one
    process would; process 1 stops at once, says nothing and writes nothing."""
    data = write_digit_folders(tmp_path / "digits", per_class=8)
    port = str(free_port())
    lrf = tmp_path / "lrf"
    args = [sys.executable, "-m", "lanner", "lr-find", str(data), "--run", str(lrf), "--steps", "20"]
    args += ["--model", "test_resnet", "--image-size", "16", "--batch-size", "8", "--device", "cpu"]
    group = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    envs = [{**group, "RANK": str(r), "LOCAL_RANK": str(r)} for r in (0, 1)]
    done = _together([args, args], envs, tmp_path)
    assert [p.returncode for p in done] == [0, 0], done[0].stdout + done[0].stderr + done[1].stderr
    assert "runs in process 0 alone (the other 1 stopped)" in done[0].stdout
    assert done[1].stdout.strip() == "" and "Traceback" not in done[1].stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits", "lrf"]  # one run directory
    summary = json.loads((lrf / "lr_find.json").read_text())
    assert len((lrf / "lr_find.csv").read_text().splitlines()) == 1 + summary["steps"]
    assert 0 < summary["steps"] <= 20 and (lrf / "lr_find.png").is_file()
    assert json.loads((lrf / "hardware.json").read_text())["processes"] == 1
