"""The Python API: docs/python-api.md's examples run as written, and ``lanner.load(RUN).predict``
agrees with ``lanner predict`` on the same files, for paths, PIL images and numpy arrays."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import save_untrained_detector, write_digit_folders
from PIL import Image

import lanner
from lanner.errors import DataError

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
DETECTOR = {"task": "detect", "classes": ["rbc", "wbc"], "image_size": 64, "score_threshold": 0.0}


def doc_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def documented(tmp_path_factory):
    """The namespace after running every example of docs/python-api.md in order, in a folder holding
    what the page says: ``digits/`` (train/test class folders) and a detection run ``runs/boxes``."""
    here = tmp_path_factory.mktemp("api")
    write_digit_folders(here / "digits", per_class=8, splits=("train", "test"))
    save_untrained_detector(here / "runs" / "boxes", DETECTOR)
    namespace: dict = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(here)
        mp.setenv("LANNER_CACHE", str(here / "cache"))
        for code in doc_examples():
            exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    return here, namespace


def test_the_documented_examples_run_and_return_typed_results(documented):
    here, ns = documented
    assert len(doc_examples()) >= 5
    assert ns["run"] == Path("runs/digits") and (here / "runs/digits/report.html").is_file()
    assert 0.0 <= ns["metrics"]["accuracy"] <= 1.0 and ns["metrics"]["num_images"] == 24
    assert isinstance(ns["result"], lanner.Classification) and ns["result"].label in ns["model"].classes
    assert len(ns["result"].topk) == 3 and [len(r.topk) for r in ns["results"]] == [1, 1, 1]
    found, tiled = ns["found"], ns["tiled"]
    assert isinstance(found, lanner.Detection) and len(found) > 0  # untrained, threshold 0: boxes
    for det in (found, tiled):
        assert det.boxes.shape == (len(det), 4) and set(det.labels) <= {"rbc", "wbc"}
        assert det.boxes[:, [0, 2]].max() <= 200 and det.boxes[:, [1, 3]].max() <= 120
        assert list(det.scores) == sorted(det.scores, reverse=True)
    assert json.dumps(found.to_dict()) and json.dumps(ns["result"].to_dict())


def test_eval_of_a_checkpoint_file_scores_it_and_writes_into_its_run(documented, monkeypatch):
    # `lanner eval RUN/checkpoints/last.ckpt` (the last epoch's weights, not the val-picked best) writes
    # its metrics and report into RUN; it used to print the metrics, then fail: "run directory not found".
    from lanner import api

    here, _ = documented
    monkeypatch.chdir(here)
    run = here / "runs" / "digits"
    (run / "report.html").unlink()
    metrics = api.evaluate(run / "checkpoints" / "last.ckpt")
    assert metrics["num_images"] == 24 and (run / "report.html").is_file()
    assert json.loads((run / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]


def test_in_memory_predictions_match_lanner_predict_on_files(documented):
    here, ns = documented
    model, rows = ns["model"], ns["rows"]  # rows: lanner.predict on digits/test
    paths = [here / row["path"] for row in rows]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    for row, result in zip(rows, model.predict(arrays), strict=True):
        assert (result.label, result.score) == (row["label"], pytest.approx(row["score"], abs=1e-5))


def test_a_detector_in_memory_matches_lanner_predict_on_a_file(documented, shared_data):
    here, ns = documented
    src = sorted((shared_data / "rbc_roboflow_coco" / "test").glob("*.jpg"))[0]
    lanner.predict(here / "runs/boxes", [str(src)], out=here / "boxes-out")
    written = json.loads((here / "boxes-out" / "detections.json").read_text())["images"][0]
    found = ns["detector"].predict(Image.open(src))
    assert found.labels == written["labels"]
    np.testing.assert_allclose(found.boxes, written["boxes"], atol=0.01)  # the file rounds to 2 places
    assert found.boxes[:, 2].max() <= Image.open(src).width


def test_bad_inputs_name_the_problem(documented):
    _, ns = documented
    with pytest.raises(DataError, match="HxWx3"):
        ns["model"].predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(DataError, match="nowhere.png: file not found"):
        ns["model"].predict("nowhere.png")


def test_import_lanner_does_not_import_torch():
    code = "import sys, lanner; print('torch' in sys.modules, callable(lanner.train))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


# ------------------------------------------------------------------- sharing, and --json for scripts
def _json_line(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_safetensors_folder_loads_in_timm_and_in_lanner(documented, capsys):
    import timm
    import torch

    from lanner import cli
    from lanner.tasks.loading import load_run

    here, ns = documented
    run = here / ns["run"]
    assert cli.run_cli(["export", str(run), "--format", "safetensors", "--json"]) == 0
    info = _json_line(capsys)
    folder = Path(info["folder"])
    assert info["command"] == "export" and {"model.safetensors", "config.json", "README.md"} <= {
        p.name for p in folder.iterdir()
    }
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()  # timm's own loader
    ours = load_run(run)
    prep = ours.meta.get("preprocessing")
    assert model.pretrained_cfg["label_names"] == ours.classes
    assert list(model.pretrained_cfg["mean"]) == pytest.approx(prep["mean"])
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), ours.model(x), atol=1e-5)
    again = lanner.predict(folder, [str(here / "digits/test")], topk=2)
    assert [(r["label"], r["score"]) for r in again] == [(r["label"], r["score"]) for r in ns["rows"]]
    card = (folder / "README.md").read_text()
    assert (
        "library_name: timm" in card
        and "pretrained=True" in card
        and "| accuracy |" in card
        and "## Limitations" in card
    )
    assert "![training curves](curves.png)" in card and (folder / "curves.png").is_file()


class RecordingHub:
    """Stands in for huggingface_hub.HfApi (no network here): records what lanner asks of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return "commit-1"


def test_push_uploads_the_exported_folder(documented):
    from lanner import share

    here, ns = documented
    hub = RecordingHub()
    info = share.push(here / ns["run"], "someone/digits", private=True, hub=hub)
    (create, repo), (upload, args) = hub.calls
    assert create == "create_repo" and repo == {
        "repo_id": "someone/digits", "repo_type": "model", "private": True, "exist_ok": True,
    }  # fmt: skip
    assert upload == "upload_folder" and args["repo_id"] == "someone/digits"
    assert (Path(args["folder_path"]) / "model.safetensors").is_file() and info["commit"] == "commit-1"
    with pytest.raises(lanner.ConfigError, match="USER/NAME"):
        share.push(here / ns["run"], "digits", hub=hub)


def test_json_is_the_last_line_of_eval_predict_and_report(documented, capsys):
    from lanner import cli

    here, ns = documented
    run = str(here / ns["run"])
    assert cli.run_cli(["eval", run, "--split", "test", "--no-report", "--json"]) == 0
    evaluated = _json_line(capsys)
    assert evaluated["command"] == "eval" and evaluated["metrics"]["accuracy"] == ns["metrics"]["accuracy"]
    assert evaluated["metrics_file"].endswith("metrics.json")
    assert cli.run_cli(["predict", run, str(here / "digits/test"), "--json"]) == 0
    predicted = _json_line(capsys)
    assert (predicted["images"], predicted["failed"]) == (24, 0)
    assert cli.run_cli(["report", run, "--json"]) == 0
    assert Path(_json_line(capsys)["report"]).is_file()
