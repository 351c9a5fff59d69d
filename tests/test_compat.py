"""Runs made by lanner 0.1.0 (before the task plug-ins and the run-directory schema) still work.

tests/fixtures/run-0.1.0 is a real run written by lanner 0.1.0 (`lanner train data --model
test_efficientnet --image-size 16 --epochs 1 --batch-size 8 --optimizer sgd --run run --no-eval` on
the images of ``write_tiny_class_folders``), with its plots and best.ckpt left out to keep it small.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import write_tiny_class_folders
from rich.console import Console

from lanner import api
from lanner.engine.checkpoint import load_checkpoint
from lanner.engine.history import read_history
from lanner.rundir import CheckpointMeta, RunDir

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"


@pytest.fixture
def old_run(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the run names its data relatively: data/
    write_tiny_class_folders(tmp_path / "data")
    shutil.copytree(FIXTURE, tmp_path / "run")
    return tmp_path / "run"


def test_old_checkpoint_metadata_reads_through_the_schema(old_run):
    ckpt = load_checkpoint(RunDir(old_run).checkpoint("last"))
    meta = CheckpointMeta.from_checkpoint(ckpt)
    assert ckpt["lanner_version"] == "0.1.0" and meta.version == "0.1.0"
    assert meta.task == "classify" and meta.classes == ["bright", "dark"]
    assert meta.model_name == "test_efficientnet" and meta.get("preprocessing")["image_size"] == 16


def test_old_run_evaluates_predicts_and_reports(old_run):
    metrics = api.evaluate(old_run, console=Console(quiet=True))
    assert metrics["split"] == "val" and metrics["classes"] == ["bright", "dark"]
    assert (
        sum(c["support"] for c in metrics["per_class"].values()) == 4
    )  # the saved split's val images (split.csv)
    rows = api.predict(old_run, ["data/dark"], console=Console(quiet=True))
    assert len(rows) == 12 and all(r["label"] in ("bright", "dark") for r in rows)
    assert RunDir(old_run).report.stat().st_size > 0


def test_old_run_resumes_as_a_new_segment(old_run):
    api.resume(old_run, Console(quiet=True), epochs=2, lr=0.01, evaluate_after=False)
    history = read_history(RunDir(old_run).history)
    assert [int(r["epoch"]) for r in history] == [1, 2]
    ckpt = load_checkpoint(RunDir(old_run).checkpoint("last"))
    assert ckpt["train_state"]["epoch"] == 2 and len(ckpt["train_state"]["segments"]) == 2
    assert CheckpointMeta.from_checkpoint(ckpt).model_name == "test_efficientnet"
