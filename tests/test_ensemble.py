"""Ensembles of detectors (``lanner predict RUN1 RUN2 IMAGES``, ``lanner eval RUN1 RUN2 DATA``): boxes
fused by weighted box fusion; classifier ensembles are tested on trained runs in test_classic_models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import save_untrained_detector

from lanner import api, cli
from lanner.data.detections import Detections
from lanner.predict.merge import fuse_models

META = {"task": "detect", "classes": ["rbc", "wbc"], "score_threshold": 0.0}


@pytest.fixture(scope="module")
def detectors(tmp_path_factory) -> list[Path]:
    """Two detector runs on the same classes at different input sizes (so their boxes differ)."""
    root = tmp_path_factory.mktemp("ensemble")
    return [save_untrained_detector(root / f"det{size}", {**META, "image_size": size}) for size in (64, 96)]


@pytest.fixture(scope="module")
def image(shared_data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    src = sorted((shared_data / "rbc_roboflow_coco" / "test").glob("*.jpg"))[0]
    return Path(shutil.copy(src, folder / src.name))


def _detections(row: dict) -> Detections:
    labels = [META["classes"].index(name) for name in row["labels"]]
    return Detections(np.array(row["boxes"]).reshape(-1, 4), np.array(row["scores"]), np.array(labels))


def test_fused_boxes_equal_the_merge_of_each_runs_own_predictions(detectors, image, tmp_path, capsys):
    own = [
        api.predict(run, [str(image)], tmp_path / f"own{i}", device="cpu")[0]
        for i, run in enumerate(detectors)
    ]
    assert all(len(row["boxes"]) > 0 for row in own) and own[0]["boxes"] != own[1]["boxes"]
    capsys.readouterr()
    args = ["predict", *map(str, detectors), str(image), "--weights", "2,1", "--device", "cpu", "--json"]
    assert cli.run_cli(args) == 0  # the second RUN is told from the image by its checkpoint
    said = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (said["out"], said["images"]) == (str(detectors[0] / "ensemble" / "predictions"), 1)
    fused_doc = json.loads((detectors[0] / "ensemble" / "predictions" / "detections.json").read_text())
    (entry,) = fused_doc["images"]
    want = fuse_models([_detections(r) for r in own], [2 / 3, 1 / 3])
    assert np.allclose(np.array(entry["boxes"]).reshape(-1, 4), want.boxes, atol=6e-3)  # the file rounds
    # (untrained detectors' boxes seldom overlap, so few or none fuse: the equality is the check)
    assert np.allclose(entry["scores"], want.scores, atol=1e-4) and len(want) <= sum(
        len(r["boxes"]) for r in own
    )
    members = json.loads((detectors[0] / "ensemble" / "ensemble.json").read_text())["members"]
    assert [m["run"] for m in members] == [str(d) for d in detectors] and members[0]["weight"] == 2 / 3


def test_ensemble_eval_scores_the_fusion_beside_each_member(detectors, shared_data, capsys):
    data = str(shared_data / "rbc_roboflow_coco" / "test")
    metrics = api.evaluate(detectors, data, device="cpu")
    assert set(metrics["members"]) == {str(d) for d in detectors}
    saved = json.loads((detectors[0] / "ensemble" / "metrics.json").read_text())
    assert saved["map"] == metrics["map"] and "ensemble of 2 runs" in capsys.readouterr().out
    assert not (detectors[0] / "metrics.json").exists()  # the first run's own evaluation is left alone


def test_runs_with_other_classes_do_not_combine(detectors, image, tmp_path, capsys):
    other = save_untrained_detector(
        tmp_path / "platelets", {**META, "classes": ["rbc", "platelet"], "image_size": 64}
    )
    assert cli.run_cli(["predict", str(detectors[0]), str(other), str(image)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "classes only in the first: wbc" in out and "classes only in this one: platelet" in out
    assert cli.run_cli(["eval", str(detectors[0]), str(detectors[1]), "--weights", "1"]) == 2
    assert "1 weight(s) for 2 runs" in " ".join(capsys.readouterr().out.split())
