"""Test-time augmentation (``--tta`` on eval and predict, :mod:`lanner.predict.tta`) on real images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import save_untrained_classifier, save_untrained_detector, write_tiny_class_folders
from PIL import Image, ImageOps

from lanner import api, cli
from lanner.data.box_transforms import load_letterboxed
from lanner.data.cache import preprocess
from lanner.data.detections import Detections
from lanner.data.pixels import Preprocessing, eval_batch
from lanner.predict.merge import fuse_models
from lanner.predict.tta import detect_views, mirror_canvases
from lanner.tasks.detect.training import detect_canvases
from lanner.tasks.loading import load_run

CLASSES = ["cardboard", "glass", "metal"]


@pytest.fixture(scope="module")
def photo(shared_data, tmp_path_factory) -> Path:
    src = sorted((shared_data / "trashnet_112_cls" / "glass").glob("*.jpg"))[0]
    return Path(shutil.copy(src, tmp_path_factory.mktemp("photo") / src.name))


def _probabilities(row: dict) -> np.ndarray:
    scores = dict(item.split(":") for item in row["topk"].split(";"))
    return np.array([float(scores[c]) for c in CLASSES])


def test_classification_tta_is_the_mean_over_the_mirror_and_the_crops(photo, tmp_path):
    run = save_untrained_classifier(tmp_path / "cls", CLASSES, image_size=32)
    (plain,) = api.predict(run, [str(photo)], tmp_path / "plain.csv", device="cpu", topk=3)
    (tta,) = api.predict(run, [str(photo)], tmp_path / "tta.csv", device="cpu", topk=3, tta=True)
    loaded = load_run(run)
    prep = Preprocessing.from_dict(loaded.meta.get("preprocessing"))
    square = preprocess(photo, prep.cache_size)  # [S', S', 3], what the classifier's cache holds
    s, margin = prep.image_size, (prep.cache_size - prep.image_size) // 2
    centre = square[margin : margin + s, margin : margin + s]
    views = [centre, centre[:, ::-1], square[:s, :s], square[-s:, -s:]]
    with torch.no_grad():
        each = [loaded.model(eval_batch(v[None].copy(), prep)).softmax(1)[0].numpy() for v in views]
    assert np.allclose(_probabilities(plain), each[0], atol=2e-4)  # no --tta: the centre crop alone
    assert np.allclose(_probabilities(tta), np.mean(each, 0), atol=2e-4)
    assert not np.allclose(each[0], np.mean(each, 0), atol=2e-4)  # the views do change the answer
    data = write_tiny_class_folders(tmp_path / "data", per_class=3)
    other = save_untrained_classifier(tmp_path / "two", ["bright", "dark"], image_size=16)
    metrics = api.evaluate(other, str(data), device="cpu", report=False, tta=True)
    assert metrics["tta"] is True and json.loads((other / "metrics.json").read_text())["tta"] is True


@pytest.fixture(scope="module")
def cells(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """A real RBC image and its mirror image as a file."""
    folder = tmp_path_factory.mktemp("cells")
    src = sorted((shared_data / "rbc_roboflow_coco" / "test").glob("*.jpg"))[1]
    image = Path(shutil.copy(src, folder / src.name))
    ImageOps.mirror(Image.open(image)).save(folder / "mirrored.png")
    return image, folder / "mirrored.png"


def test_detection_tta_maps_the_mirrored_view_back_onto_the_image(cells, tmp_path):
    image, mirrored = cells
    run = save_untrained_detector(tmp_path / "det", {"task": "detect", "classes": ["rbc", "wbc"],
                                                     "image_size": 64, "score_threshold": 0.0})  # fmt: skip
    loaded = load_run(run)
    canvas, size = load_letterboxed(image, 64)
    sizes = np.array([size])
    flipped, _ = load_letterboxed(mirrored, 64)
    assert np.abs(mirror_canvases(canvas[None], sizes)[0].astype(int) - flipped).max() <= 1

    def detect(canvases, wh):
        return detect_canvases(loaded.model, canvases, wh, torch.device("cpu"))

    views = detect_views(detect, canvas[None], sizes)
    (on_mirror,) = detect(flipped[None], sizes)  # the plain detector on the mirror-image file
    width = size[0]
    back = np.stack([width - on_mirror.boxes[:, 2], on_mirror.boxes[:, 1], width - on_mirror.boxes[:, 0],
                     on_mirror.boxes[:, 3]], 1)  # fmt: skip
    found = views[1][0]
    assert len(found) == len(on_mirror) > 0 and np.allclose(found.scores, on_mirror.scores, atol=1e-5)
    assert np.allclose(found.boxes, back, atol=1e-3)  # the letterbox of a mirror image is its mirror
    assert len(views) == 3 and all(len(v) == 1 for v in views)
    assert cli.run_cli(["predict", str(run), str(image), "--tta", "--out", str(tmp_path / "p")]) == 0
    (entry,) = json.loads((tmp_path / "p" / "detections.json").read_text())["images"]
    boxes = np.array(entry["boxes"]).reshape(-1, 4)
    assert len(boxes) > 0 and boxes.min() >= 0 and boxes[:, [0, 2]].max() <= width


def test_tiled_tta_fuses_the_tiles_of_the_image_and_of_its_mirror_image(cells, tmp_path):
    image, mirrored = cells
    run = save_untrained_detector(tmp_path / "det", {"task": "detect", "classes": ["rbc", "wbc"],
                                                     "image_size": 64, "score_threshold": 0.0})  # fmt: skip
    tiled = {"device": "cpu", "tile": 160}  # 416 px: 3 x 3 tiles
    (plain,) = api.predict(run, [str(image)], tmp_path / "plain", **tiled)
    (flipped,) = api.predict(run, [str(mirrored)], tmp_path / "flipped", **tiled)
    (both,) = api.predict(run, [str(image)], tmp_path / "tta", tta=True, **tiled)
    width = Image.open(image).width
    back = np.array(flipped["boxes"]).reshape(-1, 4)[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [width, 0, width, 0]
    labels = lambda row: np.array([["rbc", "wbc"].index(c) for c in row["labels"]])  # noqa: E731
    want = fuse_models([Detections(np.array(plain["boxes"]).reshape(-1, 4), plain["scores"], labels(plain)),
                        Detections(back, flipped["scores"], labels(flipped))], [1.0, 1.0])  # fmt: skip
    assert len(both["boxes"]) == len(want) > 0 and len(want) < len(plain["boxes"]) + len(flipped["boxes"])
    assert np.allclose(both["boxes"], want.boxes, atol=0.02) and np.allclose(
        both["scores"], want.scores, atol=1e-4
    )
