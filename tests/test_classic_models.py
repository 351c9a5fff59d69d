"""Classic small nets by name (models/classic.py) and the layer summary of `lanner models`."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import save_untrained_classifier, write_tiny_class_folders

from lanner import api, cli
from lanner.config import make_config
from lanner.errors import ConfigError
from lanner.models.classic import CLASSIC_MODELS

SRC = Path(cli.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def classic_runs(tmp_path_factory) -> dict[str, Path]:
    """Every classic net trained one epoch on two classes of real 16 px images, at 16 px."""
    root = tmp_path_factory.mktemp("classic")
    data = write_tiny_class_folders(root / "data", per_class=6)
    runs = {}
    for name in CLASSIC_MODELS:
        values = {"data": str(data), "run": str(root / name), "model": name, "image_size": 16, "epochs": 1,
                  "batch_size": 8, "cache_dir": str(root / "cache"), "workers": 1}  # fmt: skip
        if name == "minivggnet":
            values["freeze"] = "backbone"  # the run summary marks what was frozen
        runs[name] = api.train(make_config(values), evaluate_after=False)
    return runs


def test_every_classic_net_trains_and_is_used_by_the_cli_in_a_new_process(classic_runs, tmp_path):
    image = next((classic_runs["lenet"].parent / "data" / "bright").glob("*.png"))
    script = f"""
        from lanner.cli import run_cli
        runs = {[str(p) for p in classic_runs.values()]}
        for run in runs:
            assert run_cli(["predict", run, {str(image)!r}, "--out", run + "/p.csv"]) == 0, run
        assert run_cli(["eval", runs[0], "--no-report"]) == 0
        assert run_cli(["export", runs[-1]]) == 0
    """
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for name, run in classic_runs.items():
        (row,) = list(csv.DictReader((run / "p.csv").open()))
        assert row["label"] in ("dark", "bright") and row["error"] == "", name
    assert (classic_runs[CLASSIC_MODELS[0]] / "metrics.json").is_file()
    assert (classic_runs[CLASSIC_MODELS[-1]] / "export" / "model.onnx").is_file()


def test_summary_of_a_name_counts_parameters_and_multiply_adds():
    s = api.model_summary("resnet18", image_size=224)
    assert round(s.params / 1e6, 1) == 11.7 and round(s.macs / 1e9, 1) == 1.8  # the figures papers quote
    assert [b.name for b in s.blocks][-2:] == ["global_pool", "fc"]
    assert s.blocks[-1].output == "1x1000" and sum(b.params for b in s.blocks) == s.params
    g = api.model_summary("minigooglenet")  # the classic nets' own size: 32 px
    assert g.input == "1x3x32x32" and g.blocks[0].output == "1x96x32x32"


def test_summary_of_a_run_marks_the_frozen_blocks(classic_runs, capsys):
    s = api.model_summary(classic_runs["minivggnet"])
    frozen, params = {b.name: b.frozen for b in s.blocks}, {b.name: b.params for b in s.blocks}
    assert frozen["stage1"] == params["stage1"] > 0 and frozen["pre_logits"] == params["pre_logits"] > 0
    assert frozen["fc"] == 0 and s.trainable == params["fc"] == 512 * 2 + 2
    assert s.input == "1x3x16x16" and s.blocks[-1].output == "1x2"
    assert cli.run_cli(["models", str(classic_runs["minivggnet"])]) == 0
    out = capsys.readouterr().out
    assert "stage1" in out and "frozen: backbone for the whole run" in out


def _probabilities(rows: list[dict]) -> np.ndarray:
    """{class: p} of each predict row's top-k (k = all classes), as [images, classes] in class order."""
    return np.array([[dict(pair.split(":") for pair in r["topk"].split(";"))[c] for c in ("bright", "dark")]
                     for r in rows], dtype=float)  # fmt: skip


def test_classifier_ensemble_averages_each_runs_own_probabilities(classic_runs, tmp_path):
    other_size = save_untrained_classifier(tmp_path / "wide", ["bright", "dark"], image_size=32)
    runs = [classic_runs["lenet"], classic_runs["cifar_resnet20"], other_size]
    images = [str(classic_runs["lenet"].parent / "data")]
    own = [
        _probabilities(api.predict(run, images, tmp_path / f"{i}.csv", topk=2)) for i, run in enumerate(runs)
    ]
    fused = _probabilities(api.predict(runs, images, tmp_path / "fused.csv", topk=2, weights=[2, 1, 1]))
    assert fused.shape == (12, 2) and np.allclose(fused, (2 * own[0] + own[1] + own[2]) / 4, atol=2e-4)
    metrics = api.evaluate(runs[:2], report=False)
    assert set(metrics["members"]) == {str(r) for r in runs[:2]}
    assert (classic_runs["lenet"] / "ensemble" / "eval" / "predictions.json").is_file()


def test_submission_csv_has_the_columns_asked_for(classic_runs, tmp_path):
    run, out = classic_runs["lenet"], tmp_path / "sub.csv"
    rows = api.predict(run, [str(run.parent / "data")], out, columns="Id=stem,Expected=index,Label=name")
    lines = out.read_text().splitlines()
    assert lines[0] == "Id,Expected,Label" and len(lines) == 1 + len(rows) == 13
    first = lines[1].split(",")
    assert first == [
        Path(rows[0]["path"]).stem,
        str(["bright", "dark"].index(rows[0]["label"])),
        rows[0]["label"],
    ]
    with pytest.raises(ConfigError, match="SOURCE one of stem"):
        api.predict(run, [str(run.parent / "data")], out, columns="Id=basename")
