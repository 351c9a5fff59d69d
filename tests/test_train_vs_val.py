"""Train metrics every epoch (--eval-train), the over-fitting note, per-class thresholds of a classifier,
and the report's data-check block: on a tiny real training run."""

from __future__ import annotations

import csv
import json

import pytest
from helpers import write_digit_folders

from lanner import api
from lanner.config import make_config
from lanner.engine.history import overfitting_start, read_history, write_history
from lanner.report._builder import collect


def _rows(val: list[float], train: list[float]) -> list[dict]:
    return [
        {"epoch": i + 1, "val_acc": v, "train_acc": t}
        for i, (v, t) in enumerate(zip(val, train, strict=True))
    ]


def test_overfitting_rule():
    # val best at epoch 2, then 3 epochs without improvement while train climbs: began at epoch 3
    rows = _rows([0.5, 0.7, 0.65, 0.66, 0.6], [0.5, 0.7, 0.8, 0.9, 0.95])
    assert overfitting_start(rows, "val_acc") == {
        "epoch": 3, "best_epoch": 2, "monitor": "val_acc", "train_metric": "train_acc",
    }  # fmt: skip
    assert overfitting_start(rows[:4], "val_acc") is None  # only two epochs since the best
    flat = _rows([0.5, 0.7, 0.6, 0.6, 0.6], [0.5, 0.7, 0.7, 0.69, 0.7])
    assert overfitting_start(flat, "val_acc") is None  # train stalled too: a plateau
    assert (
        overfitting_start([{k: v for k, v in r.items() if k != "train_acc"} for r in rows], "val_acc") is None
    )
    losses = [{"epoch": i + 1, "val_loss": v, "train_loss": t} for i, (v, t) in enumerate(
        zip([1.0, 0.6, 0.7, 0.8, 0.9], [1.0, 0.6, 0.5, 0.4, 0.3], strict=True))]  # fmt: skip
    assert overfitting_start(losses, "val_loss")["best_epoch"] == 2  # lower is better for a loss


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tvv")
    data = write_digit_folders(root / "digits", per_class=12)
    config = make_config(
        {
            "data": str(data), "run": str(root / "run"), "model": "test_resnet", "image_size": 16,
            "epochs": 2, "batch_size": 8, "eval_train": 5, "cache_dir": str(root / "cache"),
        }
    )  # fmt: skip
    return api.train(config, evaluate_after=False)


def test_train_metrics_each_epoch_and_thresholds_on_val(run, tmp_path):
    history = read_history(run / "history.csv")
    assert len(history) == 2 and all(0 <= float(r["train_acc"]) <= 1 for r in history)
    assert {"val_acc", "train_acc", "train_loss"} <= set(history[0])
    metrics = api.evaluate(run, split="val", report=True)
    saved = json.loads((run / "thresholds.json").read_text())
    assert saved["split"] == "val" and set(saved["classes"]) == {"digit0", "digit1", "digit7"}
    for name, entry in saved["classes"].items():
        assert metrics["per_class"][name]["threshold"] == pytest.approx(entry["threshold"] or 0.0)
    rows = api.predict(run, [str(run.parent / "digits" / "digit0")], tmp_path / "p.csv")
    thresholds = {n: e["threshold"] or 0.0 for n, e in saved["classes"].items()}
    with (tmp_path / "p.csv").open() as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows) == 12
    for row in written:
        assert row["confident"] == ("yes" if float(row["score"]) >= thresholds[row["label"]] else "no")
    report = (run / "report.html").read_text()
    assert '"train_acc":[' in report  # the history's train column reaches the report's chart data


def test_report_shows_overfitting_and_readable_data_problems(run):
    first = read_history(run / "history.csv")[0]
    val, train = [0.5, 0.7, 0.6, 0.6, 0.6], [0.5, 0.7, 0.8, 0.9, 0.95]
    rows = [{**first, "epoch": e + 1, "val_acc": val[e], "train_acc": train[e]} for e in range(5)]
    write_history(run / "history.csv", rows)
    (run / "data_check.json").write_text(json.dumps({
        "num_images": 36, "width": {}, "height": {}, "num_issues": 1,
        "issues": [{"path": "a.png", "problem": "cannot be read", "action": "skipped", "kind": "image"}],
    }))  # fmt: skip
    data = collect(run)
    assert data["overfitting"] == {
        "epoch": 3,
        "best_epoch": 2,
        "monitor": "val_acc",
        "train_metric": "train_acc",
    }
