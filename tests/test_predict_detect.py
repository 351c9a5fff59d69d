"""Detection prediction: every output format reads back with read_dataset, in full-image pixels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import save_untrained_detector
from PIL import Image
from rich.console import Console

from lanner.config import InferenceOptions
from lanner.data.detections import Detections
from lanner.data.formats import read_dataset
from lanner.tasks.detect.predict import FORMATS, WRITERS, predict_detection_files, render_image
from lanner.tasks.loading import load_run

META = {"task": "detect", "classes": ["rbc", "wbc"], "image_size": 64, "score_threshold": 0.0}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return save_untrained_detector(tmp_path_factory.mktemp("runs") / "det", META)


@pytest.fixture(scope="module")
def images(shared_data, tmp_path_factory) -> Path:
    """Three real images (one resized to a non-square shape) and one unreadable file."""
    folder = tmp_path_factory.mktemp("images")
    for src in sorted((shared_data / "rbc_roboflow_coco" / "test").glob("*.jpg"))[:2]:
        shutil.copy(src, folder / src.name)
    Image.open(src).resize((300, 180)).save(folder / "wide.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_reads_back(run, images, tmp_path, fmt):
    rows = predict_detection_files(
        load_run(run), [str(images)], tmp_path / "out", InferenceOptions(format=fmt), Console()
    )
    assert sum(1 for r in rows if r["error"]) == 1  # the broken file is reported, not fatal
    target = tmp_path / "out" / WRITERS[fmt][1]
    # The predictions name the input images where they are, outside the output folder: trusted here.
    back = read_dataset(target, allow_outside_root=True)
    assert back.task == "detect" and len(back.records) == 3
    scores = json.loads((tmp_path / "out" / "detections.json").read_text())
    by_name = {Path(r.path).name: r for r in back.records}
    for entry in scores["images"]:
        rec = by_name[Path(entry["path"]).name]
        assert (rec.width, rec.height) == (entry["width"], entry["height"])
        assert rec.num_boxes == len(entry["boxes"]) == len(entry["scores"])
        assert np.allclose(
            np.sort(rec.boxes, axis=0), np.sort(np.array(entry["boxes"]).reshape(-1, 4), axis=0), atol=0.02
        )
    wide = by_name["wide.png"]
    assert (wide.width, wide.height) == (300, 180)
    if wide.num_boxes:  # full-image pixels: boxes may reach past the letterbox's 64 px, never past the image
        assert wide.boxes[:, 2].max() <= 300 and wide.boxes[:, 3].max() <= 180


def test_tiled_prediction_streams_all_files_and_reports_the_broken_one_in_place(run, images, tmp_path):
    rows = predict_detection_files(
        load_run(run), [str(images)], tmp_path / "tiled", InferenceOptions(format="coco", tile=64), Console()
    )
    names = [Path(r["path"]).name for r in rows]
    assert names == sorted(names)  # input order, the broken file in its place
    assert [bool(r["error"]) for r in rows] == [n == "broken.jpg" for n in names]
    back = read_dataset(tmp_path / "tiled" / "coco.json", allow_outside_root=True)
    wide = next(r for r in back.records if Path(r.path).name == "wide.png")
    assert (wide.width, wide.height) == (300, 180) and len(back.records) == 3


def test_labelme_output_opens_in_labelme(run, images, tmp_path):
    predict_detection_files(
        load_run(run),
        [str(images / "wide.png")],
        tmp_path / "out",
        InferenceOptions(format="labelme"),
        Console(),
    )
    doc = json.loads((tmp_path / "out" / "labelme" / "wide.json").read_text())
    assert doc["imageData"] is None and doc["imagePath"] == "wide.png"
    assert (tmp_path / "out" / "labelme" / doc["imagePath"]).exists()
    assert all(s["shape_type"] == "rectangle" for s in doc["shapes"])


def test_render_draws_a_downscaled_jpeg(tmp_path):
    src = tmp_path / "big.png"
    Image.new("RGB", (3000, 1500), (200, 200, 200)).save(src)
    det = Detections(np.array([[100, 100, 900, 700]]), np.array([0.9]), np.array([1]))
    out = render_image(src, det, ["rbc", "wbc"], tmp_path / "render")
    drawn = Image.open(out)
    assert drawn.format == "JPEG" and drawn.size == (1280, 640)
    s = 1280 / 3000
    assert drawn.getpixel((int(500 * s), int(400 * s))) == pytest.approx(
        (200, 200, 200), abs=3
    )  # inside: untouched
    assert drawn.getpixel((int(900 * s) - 1, int(400 * s)))[0] < 150  # the box's right edge is drawn
