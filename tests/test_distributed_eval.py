"""``lanner eval`` and ``lanner predict`` on several processes (gloo on the CPU: the NCCL code path):
each process infers on its part of the images and process 0 writes what one process writes."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    free_port,
    group_env,
    run_together,
    save_untrained_classifier,
    save_untrained_detector,
    write_digit_folders,
)

from lanner import cli
from lanner.data.formats import read_dataset
from lanner.data.split import write_split
from lanner.demo_detect import write_digit_canvases
from lanner.rundir import RunDir

TWO = ["--devices", "2", "--device", "cpu"]


def _lanner(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # group_env: a launcher's variables around pytest would make every lanner started here join its group.
    return subprocess.run(
        [sys.executable, "-m", "lanner", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=group_env(),
    )


def _as_srun_starts(args: list[str], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Two processes started at once, as ``srun --ntasks 2`` starts them (SLURM_* only, no torchrun)."""
    slurm = {"SLURM_NTASKS": "2", "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(free_port())}
    command = [sys.executable, "-m", "lanner", *args]
    envs = [{**slurm, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)} for rank in (0, 1)]
    return run_together([command, command], envs, cwd)


def _assert_same(a, b, tol: float, where: str = "") -> None:
    """Equal structures; floats equal to ``tol`` (one process batches the images differently)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], tol, f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, tol, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert b == pytest.approx(a, abs=tol, nan_ok=True), where
    else:
        assert a == b, where


def _eval_outputs(run: Path) -> tuple[dict, dict]:
    return json.loads((run / "metrics.json").read_text()), json.loads(
        (run / "eval" / "predictions.json").read_text()
    )


def _csv_rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------ classification
@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> tuple[Path, Path]:
    """(a classifier run on 36 digits in train/val/test folders, those digits): untrained, its
    BatchNorm statistics randomised, in a second where training takes a minute here."""
    root = tmp_path_factory.mktemp("classifier")
    data = write_digit_folders(root / "digits", per_class=4, splits=("train", "val", "test"))
    dataset = read_dataset(str(data))
    run = save_untrained_classifier(root / "run", dataset.classes, image_size=16, data=str(data))
    write_split(RunDir(run).split, dataset)  # the split a training run records: the folders'
    return run, data


def test_classifier_eval_and_predict_on_two_processes_equal_one_process(classifier, tmp_path):
    run, data = classifier
    # Two processes first: process 0 alone chooses the thresholds on val (the test split is evaluated)
    # and saves them; the one-process eval then reads the same ones.
    two = _lanner("eval", str(run), "--no-report", "--json", *TWO, cwd=tmp_path)
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("evaluation on split test (12 images)") == 1  # one process speaks
    assert (
        json.loads(two.stdout.strip().splitlines()[-1])["metrics"]["num_images"] == 12
    )  # once, by process 0
    assert (run / "thresholds.json").is_file()
    metrics_two, items_two = _eval_outputs(run)
    assert cli.run_cli(["eval", str(run), "--no-report", "--device", "cpu"]) == 0
    metrics_one, items_one = _eval_outputs(run)
    assert len({item["score"] for item in items_one["images"]}) == 12  # every image its own scores
    _assert_same(metrics_one, metrics_two, 1e-6)
    _assert_same(items_one, items_two, 2e-5)  # top-k scores rounded to 5 digits

    # An unreadable file among the images: its row (an error) keeps its place, on process 1's part.
    images = Path(shutil.copytree(data / "test", tmp_path / "images"))
    (images / "zz_broken.png").write_bytes(b"not an image")
    two = _lanner("predict", str(run), str(images), "--out", str(tmp_path / "two.csv"), *TWO, cwd=tmp_path)
    assert two.returncode == 0, two.stdout + two.stderr
    assert "skipped" in two.stdout and "12 image(s) classified" in two.stdout
    args = ["predict", str(run), str(images), "--out", str(tmp_path / "one.csv"), "--device", "cpu"]
    assert cli.run_cli(args) == 0
    rows_one, rows_two = _csv_rows(tmp_path / "one.csv"), _csv_rows(tmp_path / "two.csv")
    assert len(rows_one) == 13 and rows_two[-1]["path"].endswith("zz_broken.png") and rows_two[-1]["error"]
    for one, two in zip(rows_one, rows_two, strict=True):
        assert {k: v for k, v in one.items() if k not in ("score", "topk")} == {
            k: v for k, v in two.items() if k not in ("score", "topk")
        }
        assert float(one["score"] or 0) == pytest.approx(float(two["score"] or 0), abs=1e-5)


# ------------------------------------------------------------------------------------------ detection
def test_detector_eval_tiled_under_srun_and_predict_on_two_processes_equal_one_process(tmp_path):
    """Tiled evaluation started as srun starts it (each image's tiles stay in one process), and whole-image
    prediction through --devices 2 (torchrun): mAP, every box and every file as one process gives them."""
    data = write_digit_canvases(tmp_path / "canvases", n_train=1, n_val=3, size=128, objects=(2, 4))
    classes = read_dataset(str(data)).classes
    meta = {"task": "detect", "classes": classes, "image_size": 64, "score_threshold": 0.0}
    run = save_untrained_detector(tmp_path / "det", meta)
    args = ["eval", str(run), str(data), "--split", "val", "--tile", "64", "--no-report", "--device", "cpu"]
    together = _as_srun_starts(args, tmp_path)
    assert [p.returncode for p in together] == [0, 0], (
        together[0].stdout + together[0].stderr + together[1].stderr
    )
    assert "evaluation on split val (3 images)" in together[0].stdout and together[1].stdout.strip() == ""
    metrics_two, items_two = _eval_outputs(run)
    assert cli.run_cli(args) == 0
    metrics_one, items_one = _eval_outputs(run)
    assert metrics_one["num_images"] == 3 and metrics_one["tiling"]["tile"] == 64
    assert sum(len(item["pred_boxes"]) for item in items_one["images"]) > 0  # boxes to compare
    _assert_same(metrics_one, metrics_two, 1e-6)
    _assert_same(items_one, items_two, 0.011)  # boxes rounded to 2 decimals

    images = str(data / "val")
    two = _lanner("predict", str(run), images, "--out", str(tmp_path / "two"), *TWO, cwd=tmp_path)
    assert two.returncode == 0, two.stdout + two.stderr
    assert cli.run_cli(["predict", str(run), images, "--out", str(tmp_path / "one"), "--device", "cpu"]) == 0
    found = [json.loads((tmp_path / name / "detections.json").read_text()) for name in ("one", "two")]
    assert [i["path"] for i in found[0]["images"]] == [i["path"] for i in found[1]["images"]]
    _assert_same(found[0], found[1], 0.011)
    assert (tmp_path / "two" / "coco.json").is_file()


# ---------------------------------------------------------------------------------------------- refusals
def test_what_every_process_would_refuse_is_refused_before_any_starts(tmp_path, capsys):
    run = str(save_untrained_classifier(tmp_path / "run", ["a", "b"]))
    assert cli.run_cli(["eval", run, "--devices", "0"]) == 2
    assert "--devices 0: need at least 1" in capsys.readouterr().out
    # Refused here, not once in each of the processes torchrun would start (exit 2, no traceback).
    assert cli.run_cli(["eval", str(tmp_path / "no-run"), "--devices", "2"]) == 2
    assert "no such run directory" in capsys.readouterr().out
    assert cli.run_cli(["predict", run, str(tmp_path / "*.png"), "--devices", "2"]) == 2
    assert "no such file, folder or glob match" in capsys.readouterr().out
    assert cli.run_cli(["eval", run, "--classify", run, "--devices", "2"]) == 2
    assert "leave out --devices" in capsys.readouterr().out
