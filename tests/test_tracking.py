"""Experiment tracking against a real MLflow server: one lanner run = one MLflow run, resume included."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from helpers import write_digit_folders
from mlflow import MlflowClient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = open(root / "server.log", "w")  # noqa: SIM115 - open for the server's whole life
    store = ["--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "a")]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), *store],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.time() > deadline:
            server.kill()
            raise RuntimeError(f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    yield uri
    server.terminate()
    server.wait(timeout=30)
    log.close()


def _lanner(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "lanner", *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


def test_a_run_and_its_resume_are_one_mlflow_run(mlflow_server, tmp_path):
    data = write_digit_folders(tmp_path / "digits", per_class=16)
    run = tmp_path / "run"
    tiny = ["--model", "test_resnet", "--image-size", "16", "--batch-size", "8", "--no-eval"]
    track = ["--track", "mlflow", "--tracking-uri", mlflow_server, "--experiment", "digits"]
    out = _lanner("train", str(data), "--run", str(run), "--epochs", "2", *tiny, *track, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = json.loads((run / "tracking.json").read_text())["mlflow"]["run_id"]
    assert f"tracking: MLflow run {run_id}" in out.stdout

    client = MlflowClient(tracking_uri=mlflow_server)
    mlrun = client.get_run(run_id)
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == "run"
    assert client.get_experiment(mlrun.info.experiment_id).name == "digits"
    assert mlrun.data.params["model"] == "test_resnet" and mlrun.data.params["schedule.name"] == "cosine"
    assert [m.step for m in client.get_metric_history(run_id, "val_acc")] == [1, 2]
    history = (run / "history.csv").read_text().splitlines()
    first_lr = float(history[1].split(",")[history[0].split(",").index("lr")])
    assert client.get_metric_history(run_id, "lr")[0].value == pytest.approx(first_lr, rel=1e-4)
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "plots")
    }
    assert {"history.csv", "config.yaml", "segments.json", "plots/curves.png"} <= artifacts

    more = _lanner("resume", str(run), "--epochs", "3", "--lr", "5e-4", "--no-eval", cwd=tmp_path)
    assert more.returncode == 0, more.stdout + more.stderr
    assert f"continuing MLflow run {run_id}" in more.stdout
    assert [m.step for m in client.get_metric_history(run_id, "val_acc")] == [1, 2, 3]
    mlrun = client.get_run(run_id)
    assert "lr" in json.loads(mlrun.data.tags["lanner.segment.1"]) and mlrun.info.status == "FINISHED"


def test_an_unreachable_tracker_stops_the_run_before_training(tmp_path):
    data = write_digit_folders(tmp_path / "digits", per_class=8)
    run = tmp_path / "run"
    dead = f"http://127.0.0.1:{_free_port()}"
    out = _lanner(
        "train", str(data), "--run", str(run), "--track", "mlflow", "--tracking-uri", dead, cwd=tmp_path
    )
    assert out.returncode == 2 and f"MLflow tracking server {dead}: cannot reach it" in out.stdout.replace(
        "\n", ""
    )
    assert not (run / "checkpoints").exists()
