"""Issue 10, runs: what happens to a run directory when more than one thing goes on in it, or
something goes wrong in it. Real files, real `lanner` processes, real signals.

* --allow-outside-root: annotation files pointing outside their folder are refused unless trusted,
  and the trust is saved with the run;
* the run lock: a second process on the same run is refused naming the owner; a stale lock is
  taken over;
* an epoch interrupted mid-way and resumed has the train_loss of the whole epoch;
* data a run cannot train on (one class for a classifier) fails before training;
* a failed first start leaves no half-made run, or one the same --run starts over in;
* a full disk while writing a checkpoint: a clear error, no temp file, resumable from the last one.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import write_digit_folders
from PIL import Image, ImageDraw
from rich.console import Console

from lanner import api
from lanner.config import make_config
from lanner.data.formats import read_dataset
from lanner.data.split import apply_saved_split, assign_validation_split, write_split
from lanner.engine.checkpoint import load_checkpoint
from lanner.engine.history import read_history
from lanner.engine.trainer import TrainState
from lanner.errors import DataError, RunInUseError
from lanner.rundir import RunDir

TINY = ["--model", "test_resnet", "--image-size", "16", "--no-hflip", "--augment", "light"]
TINY_DETECT = ["--model", "fcos_test_resnet", "--image-size", "64", "--batch-size", "4", "--augment", "light"]


def lanner_env(cwd: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "LANNER_CACHE": str(cwd / "cache"), "COLUMNS": "250", **extra}


def lanner(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """One `lanner` command to its end (not checked: the tests assert the exit code)."""
    return subprocess.run(
        [sys.executable, "-m", "lanner", *args],
        cwd=cwd, capture_output=True, text=True, env=env or lanner_env(cwd), timeout=600,
    )  # fmt: skip


def start_lanner(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lanner", *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=lanner_env(cwd),
    )  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=250)


def printed(console: Console) -> str:
    return console.file.getvalue()


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return write_digit_folders(tmp_path_factory.mktemp("data") / "digits", per_class=16)


def write_coco_outside(root: Path, n: int = 8) -> Path:
    """root/ann/coco.json whose images live in root/images (``../images/i.png``): one class."""
    (root / "images").mkdir(parents=True)
    (root / "ann").mkdir()
    images, boxes = [], []
    for i in range(n):
        im = Image.new("RGB", (64, 64), (20, 20, 20))
        x, y = 8 + 3 * i, 10 + 2 * i
        ImageDraw.Draw(im).rectangle([x, y, x + 20, y + 16], fill=(220, 40, 40))
        im.save(root / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"../images/{i}.png", "width": 64, "height": 64})
        boxes.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [x, y, 20, 16], "area": 320})
    coco = {"images": images, "annotations": boxes, "categories": [{"id": 1, "name": "box"}]}
    (root / "ann" / "coco.json").write_text(json.dumps(coco))
    return root / "ann" / "coco.json"


# ------------------------------------------------------------------------------- outside the root
def test_outside_root_is_refused_unless_trusted_and_the_trust_is_saved(tmp_path):
    coco = write_coco_outside(tmp_path / "data")
    refused = lanner("train", str(coco), "--run", "r1", "--epochs", "1", *TINY_DETECT, cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert str(coco) in refused.stdout and "resolves outside the dataset root" in refused.stdout
    assert "--allow-outside-root" in refused.stdout
    assert not (tmp_path / "r1").exists()  # the start failed: no half-made run left behind

    args = ("train", str(coco), "--run", "r2", "--epochs", "1", "--allow-outside-root", *TINY_DETECT)
    trained = lanner(*args, "--no-eval", cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "1 classes, 6 train images" in " ".join(trained.stdout.split())  # one class: valid for a detector
    assert "allow_outside_root: true" in (tmp_path / "r2" / "config.yaml").read_text()
    # eval of the run re-reads its data as training did, without being told again
    evaluated = lanner("eval", "r2", "--no-report", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    # the other dataset readers take the same flag
    assert api.check(str(coco))["num_images"] == 0
    assert api.check(str(coco), allow_outside_root=True)["num_images"] == 8
    out, dataset = api.convert(str(coco), "yolo", tmp_path / "yolo", allow_outside_root=True)
    assert len(dataset.records) == 8 and out.exists()
    assert api.count_images(str(coco)) == 0 and api.count_images(str(coco), None, True) == 8


def test_eval_on_another_dataset_takes_the_flag(tmp_path):
    from lanner.config import InferenceOptions

    assert InferenceOptions(allow_outside_root=True).as_kwargs()["allow_outside_root"] is True
    assert "allow_outside_root" not in InferenceOptions().as_kwargs()
    help_text = lanner("eval", "--help", cwd=tmp_path).stdout
    assert "--allow-outside-root" in help_text
    for command in ("train", "lr-find", "probe", "check", "convert", "schedule"):
        assert "--allow-outside-root" in lanner(command, "--help", cwd=tmp_path).stdout, command


# ------------------------------------------------------------------------------------- the lock
def test_a_second_process_on_the_same_run_is_refused_naming_the_owner(digits, tmp_path):
    run = tmp_path / "run"
    # Long enough that the first is surely still training when the second has started (then stopped).
    args = ("--run", str(run), "--epochs", "50", "--batch-size", "2", *TINY, "--no-eval")
    first = start_lanner("train", str(digits), *args, cwd=tmp_path)
    try:
        wait_for(run / "run.lock", first)
        owner = json.loads((run / "run.lock").read_text())
        assert owner["pid"] == first.pid and owner["host"] == socket.gethostname()
        second = lanner("train", str(digits), *args, cwd=tmp_path)
        assert first.poll() is None, "the first run ended before the second was refused"
        assert second.returncode == 2, second.stdout + second.stderr
        said = " ".join(second.stdout.split())
        assert f"in use by process {first.pid} on host {socket.gethostname()}" in said
        first.send_signal(signal.SIGINT)
        output, _ = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 130, output  # stopped cleanly, not disturbed by the second
    assert not (run / "run.lock").exists()  # given back on Ctrl-C too
    resumed = lanner("resume", str(run), "--epochs", "1", "--no-eval", cwd=tmp_path)  # and free again
    assert "in use by" not in resumed.stdout, resumed.stdout


def dead_pid() -> int:
    """The pid of a process that has ended (not reused so soon: pids cycle through a large range)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(run: Path, pid: int, host: str | None = None) -> None:
    run.mkdir(parents=True, exist_ok=True)
    owner = {
        "pid": pid,
        "host": host or socket.gethostname(),
        "started": "2026-01-01T00:00:00",
        "command": "x",
    }
    (run / "run.lock").write_text(json.dumps(owner))


def test_a_stale_lock_is_taken_over_a_live_one_is_not(digits, tmp_path):
    where = {"data": str(digits), "run": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache")}
    config = make_config({**where, **TINY_CFG})
    gone = dead_pid()
    write_lock(tmp_path / "run", gone)
    console = quiet()
    run = api.train(config, console, evaluate_after=False)
    assert f"taking over {run / 'run.lock'}: process {gone} on host" in " ".join(printed(console).split())
    assert not (run / "run.lock").exists()

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        write_lock(run, sleeper.pid)
        with pytest.raises(RunInUseError, match=f"in use by process {sleeper.pid} on host"):
            api.resume(run, quiet(), evaluate_after=False, epochs=2)
        write_lock(run, gone, host="another-host")  # another host: cannot tell, never taken over
        with pytest.raises(RunInUseError, match=f"process {gone} on host another-host"):
            api.resume(run, quiet(), evaluate_after=False, epochs=2)
    finally:
        sleeper.kill()
    assert (run / "run.lock").exists()  # a refused process leaves the owner's lock alone
    (run / "run.lock").unlink()
    api.resume(run, quiet(), evaluate_after=False, epochs=2, lr=0.001)
    assert len(read_history(run / "history.csv")) == 2 and not (run / "run.lock").exists()


def test_a_lock_is_never_seen_half_written(tmp_path, monkeypatch):
    """A racing process that read an empty lock would call it stale and take a live run over."""
    from lanner.engine import runlock

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    seen_while_writing = []

    def write_and_look(path):
        seen_while_writing.append(run.lock.exists())
        write_owner(path)

    write_owner = runlock.write_owner
    monkeypatch.setattr(runlock, "write_owner", write_and_look)
    lock = runlock.RunLock(run).acquire(quiet())
    assert seen_while_writing == [False]  # the lock appeared only once its owner was written
    assert runlock.read_owner(run.lock).is_this_process()
    assert [p.name for p in run.path.iterdir()] == ["run.lock"]  # nothing else left in the run
    lock.release()
    assert not run.lock.exists()

    run.lock.write_text("")  # half-written long ago (a process killed while writing it): stale
    os.utime(run.lock, (time.time() - 60, time.time() - 60))
    taken = runlock.RunLock(run).acquire(quiet())
    assert taken.held and runlock.read_owner(run.lock).is_this_process()
    taken.release()

    def no_hard_links(*_):
        raise PermissionError("hard links not supported")

    monkeypatch.setattr(os, "link", no_hard_links)  # some network file systems: created, then written
    taken = runlock.RunLock(run).acquire(quiet())
    assert taken.held and runlock.read_owner(run.lock).is_this_process()
    assert [p.name for p in run.path.iterdir()] == ["run.lock"]
    taken.release()


# --------------------------------------------------------------------- the interrupted epoch's loss
def test_an_interrupted_epoch_has_the_train_loss_of_the_whole_epoch(digits, tmp_path):
    args = ["--epochs", "2", "--batch-size", "2", "--lr", "0.01", "--warmup", "1", *TINY, "--no-eval"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert lanner("train", str(digits), "--run", str(full), *args, cwd=tmp_path).returncode == 0

    proc = start_lanner("train", str(digits), "--run", str(cut), *args, cwd=tmp_path)
    wait_for(cut / "history.csv", proc)  # epoch 1 done: the signal lands in epoch 2
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, output
    saved = load_checkpoint(cut / "checkpoints" / "last.ckpt")["train_state"]
    assert saved["epoch"] == 1 and 1 <= saved["step_in_epoch"] < 19, saved  # mid-epoch, 19 steps an epoch
    assert saved["partial_images"] == 2 * saved["step_in_epoch"] and saved["partial_loss_sum"] > 0

    resumed = lanner("resume", str(cut), "--no-eval", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    a = load_checkpoint(full / "checkpoints" / "last.ckpt")["train_state"]["history"]
    b = load_checkpoint(cut / "checkpoints" / "last.ckpt")["train_state"]["history"]
    assert [r["train_loss"] for r in b] == pytest.approx([r["train_loss"] for r in a], abs=1e-6, rel=1e-6)
    csv_a, csv_b = read_history(full / "history.csv"), read_history(cut / "history.csv")
    assert [r["train_loss"] for r in csv_b] == [r["train_loss"] for r in csv_a]


def test_a_checkpoint_without_the_partial_epoch_still_loads():
    from lanner.config import ScheduleSpec
    from lanner.engine.schedules import Segment

    segment = Segment(0, 0, 0, end_step=30, steps_per_epoch=10, base_lr=0.1, schedule=ScheduleSpec())
    state = TrainState(total_epochs=3, segments=[segment], step_in_epoch=4)
    old = state.to_dict()
    del old["partial_loss_sum"], old["partial_images"]  # what lanner <= this change saved
    restored = TrainState.from_dict(old)
    assert restored.step_in_epoch == 4 and (restored.partial_loss_sum, restored.partial_images) == (0.0, 0)


# --------------------------------------------------------------------------- untrainable data
def test_a_one_class_classification_dataset_fails_before_training(tmp_path, digits):
    one = write_digit_folders(tmp_path / "one", labels=(3,), per_class=8)
    result = lanner("train", str(one), "--run", "r", "--epochs", "1", *TINY, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    said = " ".join(result.stdout.split())
    assert f"{one}: 1 class(es) (digit3); a classifier needs at least 2" in said
    assert "Traceback" not in result.stdout + result.stderr and not (tmp_path / "r").exists()
    # keeping one class of a larger dataset is the same mistake
    config = make_config({"data": str(digits), "classes": ["digit0"], "run": str(tmp_path / "k"), **TINY_CFG})
    with pytest.raises(DataError, match="a classifier needs at least 2"):
        api.train(config, quiet())


TINY_CFG = {"model": "test_resnet", "image_size": 16, "epochs": 1, "batch_size": 8}


# ------------------------------------------------------------------------------ failed first start
def test_epochs_0_is_refused_by_the_config(tmp_path, digits):
    result = lanner("train", str(digits), "--epochs", "0", "--run", "r", cwd=tmp_path)
    assert result.returncode == 2 and "epochs (--epochs): 0 is out of range; valid: >= 1" in result.stdout
    assert not (tmp_path / "r").exists()


def test_a_failed_first_start_leaves_nothing_or_a_run_that_starts_over(tmp_path, digits):
    # one class: a data error found once the run directory is made (the data is read into it)
    broken = write_digit_folders(tmp_path / "broken", labels=(3,), per_class=4)
    made_here = lanner("train", str(broken), "--run", "new", *TINY, cwd=tmp_path)
    assert made_here.returncode == 2 and not (tmp_path / "new").exists()

    (tmp_path / "mine").mkdir()  # the user's own folder: kept, and the same --run starts over in it
    failed = lanner("train", str(broken), "--run", "mine", *TINY, cwd=tmp_path)
    assert failed.returncode == 2 and (tmp_path / "mine").is_dir()
    again = lanner("train", str(digits), "--run", "mine", "--epochs", "1", *TINY, "--no-eval", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(read_history(tmp_path / "mine" / "history.csv")) == 1

    (tmp_path / "a-file").write_text("not a folder")  # --run naming a file: an error, not a crash
    for run, said in (("a-file", "a-file: is a file"), ("a-file/run", "cannot make the run directory")):
        result = lanner("train", str(digits), "--run", run, *TINY, cwd=tmp_path)
        assert result.returncode == 2 and said in result.stdout, result.stdout + result.stderr


# ------------------------------------------------------------------------------------ disk full
FULL_DISK = """
    # Injected by tests/test_hardening_runs.py: the disk fills up while the 2nd last.ckpt is written.
    import errno, os, torch
    _save, _calls = torch.save, {"n": 0}

    def save(obj, f, *args, **kwargs):
        if ".last.ckpt." in os.fspath(f):
            _calls["n"] += 1
            if _calls["n"] == 2:
                with open(f, "wb") as half:
                    half.write(b"half a checkpoint")
                raise OSError(errno.ENOSPC, "No space left on device", os.fspath(f))
        return _save(obj, f, *args, **kwargs)

    torch.save = save
"""


def test_a_full_disk_while_checkpointing_fails_clearly_and_the_run_resumes(tmp_path, digits):
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(textwrap.dedent(FULL_DISK))
    pythonpath = os.pathsep.join([str(inject), os.environ.get("PYTHONPATH", "")])
    args = ("train", str(digits), "--run", "run", "--epochs", "3", "--batch-size", "8", *TINY, "--no-eval")
    full = lanner(*args, cwd=tmp_path, env=lanner_env(tmp_path, PYTHONPATH=pythonpath))
    assert full.returncode == 2, full.stdout + full.stderr
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    said = " ".join(full.stdout.split())
    assert f"error: {Path('run') / 'checkpoints' / 'last.ckpt'}: no space left on the device" in said, said
    assert list(last.parent.glob(".*.tmp")) == []  # the half-written temp file is gone
    assert load_checkpoint(last)["train_state"]["epoch"] == 1  # the previous checkpoint is whole
    assert not (tmp_path / "run" / "run.lock").exists()

    resumed = lanner("resume", "run", "--no-eval", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [r["epoch"] for r in read_history(tmp_path / "run" / "history.csv")] == ["1", "2", "3"]


def test_the_saved_split_is_found_again_from_another_working_directory(tmp_path, monkeypatch):
    """A run trained on a relative DATA keeps config.data absolute; its split.csv must match the images
    read through that absolute path (eval, review) as well as through the relative one (resume)."""
    write_digit_folders(tmp_path / "work" / "digits", per_class=6)
    monkeypatch.chdir(tmp_path / "work")
    relative = read_dataset("digits")
    assign_validation_split(relative, 0.3, seed=1)
    write_split(tmp_path / "split.csv", relative)
    assert "digit0/" in (tmp_path / "split.csv").read_text()  # named inside the dataset, portably
    monkeypatch.chdir(tmp_path)
    absolute = read_dataset(str(tmp_path / "work" / "digits"))
    apply_saved_split(absolute, tmp_path / "split.csv")
    by_name = {Path(r.path).name: r.split for r in relative.records}
    assert {Path(r.path).name: r.split for r in absolute.records} == by_name
    assert sorted(set(by_name.values())) == ["train", "val"]
