"""TensorBoard and W&B trackers, several at once, read back with the trackers' own readers: one lanner
run (train + resume) is one TensorBoard run and one W&B run whose steps continue."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest
from helpers import write_tiny_class_folders
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from wandb.proto import wandb_internal_pb2

from lanner import api
from lanner.config import make_config
from lanner.engine.tracking import check_tracker, read_state, save_state
from lanner.errors import ConfigError


def wandb_records(path: Path):
    """The records of a W&B transaction log (``run-ID.wandb``): LevelDB log framing (32 KiB blocks,
    7-byte chunk headers) around wandb's own protobuf ``Record``s. wandb 0.31 reads these files in
    its Go core only; the framing is all this test reads by hand."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _history_rows(path: Path) -> list[dict]:
    rows = []
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            rows.append(items)
    return rows


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """A run trained 2 epochs with TensorBoard and W&B (offline), then resumed to 3 with a new LR."""
    tmp = tmp_path_factory.mktemp("tracked")
    data = write_tiny_class_folders(tmp / "data", per_class=8)
    values = {
        "data": str(data), "run": str(tmp / "run"), "model": "test_resnet", "image_size": 16,
        "batch_size": 8, "epochs": 2, "cache_dir": str(tmp / "cache"), "track": "tensorboard, wandb",
        "experiment": "squares", "run_name": "squares-baseline", "tags": ["baseline", "team=vision"],
    }  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        quiet = Console(quiet=True)
        run = api.train(make_config(values), quiet, evaluate_after=False)
        api.resume(run, quiet, evaluate_after=False, epochs=3, lr=5e-4)
    with open(run / "history.csv") as f:
        history = list(csv.DictReader(f))
    return run, history


def test_tensorboard_holds_the_history_the_curves_and_the_hparams(tracked_run):
    run, history = tracked_run
    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0})
    events.Reload()  # both event files: the first training and the resume
    numeric = [k for k in history[0] if k != "epoch" and history[0][k] not in ("", None)]
    assert set(numeric) <= set(events.Tags()["scalars"])
    for name in ("lr", "val_acc", "train_loss"):
        logged = events.Scalars(name)
        assert [e.step for e in logged] == [1, 2, 3]
        assert [e.value for e in logged] == pytest.approx([float(h[name]) for h in history], rel=1e-5)
    assert [i.step for i in events.Images("curves")] == [2, 3]  # at the end of each session
    assert events.Images("curves")[-1].width > 100
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["model"].string_value == "test_resnet"
    assert start.hparams["epochs"].number_value == 2 and start.hparams["schedule.name"].string_value
    resumed = events.Tensors("segment 1/text_summary")[0].tensor_proto.string_val[0]
    assert json.loads(resumed)["lr"] == [None, 5e-4]  # the resume's changes
    assert json.loads((run / "tracking.json").read_text())["tensorboard"] == {"logdir": "tb"}


def test_wandb_offline_files_are_one_run_continued_by_the_resume(tracked_run):
    run, history = tracked_run
    run_id = read_state(run, "wandb")["id"]
    logs = sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [p.name for p in logs] == [f"run-{run_id}.wandb"] * 2  # train, then resume: one W&B run
    first = next(r.run for r in wandb_records(logs[0]) if r.WhichOneof("record_type") == "run")
    assert (first.project, first.display_name) == ("squares", "squares-baseline")
    assert list(first.tags) == ["baseline", "team=vision"]
    config = {i.key: json.loads(i.value_json) for i in first.config.update}
    assert config["model"] == "test_resnet" and config["epochs"] == 2
    rows = [r for p in logs for r in _history_rows(p) if "lr" in r]
    assert [r["_step"] for r in rows] == [1, 2, 3]
    assert [r["lr"] for r in rows] == pytest.approx([float(h["lr"]) for h in history], rel=1e-5)
    assert [r["val_acc"] for r in rows] == pytest.approx([float(h["val_acc"]) for h in history], rel=1e-5)
    resumed = [r for r in wandb_records(logs[1]) if r.WhichOneof("record_type") == "config"]
    changes = {i.key: json.loads(i.value_json) for r in resumed for i in r.config.update}
    assert changes["lanner.segment.1"]["lr"] == [None, 0.0005]  # None: the first start chose it


def test_tracker_names_are_checked_and_old_tracking_files_still_read(tmp_path):
    with pytest.raises(ConfigError, match="'nope': lanner knows mlflow, tensorboard, wandb"):
        check_tracker("tensorboard,nope")
    (tmp_path / "tracking.json").write_text('{"backend": "mlflow", "uri": "http://x", "run_id": "abc"}')
    assert read_state(tmp_path, "mlflow")["run_id"] == "abc"  # the 0.1.0 layout
    save_state(tmp_path, "wandb", {"id": "w1"})
    assert read_state(tmp_path, "mlflow")["run_id"] == "abc" and read_state(tmp_path, "wandb") == {"id": "w1"}
