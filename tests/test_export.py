"""`lanner export`: the ONNX file alone (ONNX Runtime, no PyTorch model) gives lanner's predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import torch
from helpers import digit_images, save_untrained_classifier, save_untrained_detector

from lanner.data.box_transforms import load_letterboxed
from lanner.data.cache import preprocess
from lanner.data.pixels import Preprocessing, eval_batch
from lanner.export import export_run
from lanner.tasks.detect.training import detect_canvases
from lanner.tasks.loading import load_run


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_classifier_onnx_gives_the_probabilities_lanner_predicts(tmp_path):
    run = save_untrained_classifier(tmp_path / "cls", ["zero", "one", "seven"])
    info = export_run(run)
    assert info["checked_with_onnxruntime"]["max_abs_diff"] < 1e-4
    spec = json.loads((run / "export" / "model.json").read_text())
    assert spec["classes"] == ["zero", "one", "seven"] and spec["input"]["shape"] == ["N", 3, 32, 32]
    props = _session(run / "export" / "model.onnx").get_modelmeta().custom_metadata_map
    assert json.loads(props["lanner.classes"]) == ["zero", "one", "seven"]
    assert props["lanner.task"] == "classify"
    assert json.loads(props["lanner.preprocessing"])["image_size"] == 32

    paths = []
    for i, img in enumerate(digit_images(7, 3, size=50)):  # real digits, any size: the spec's preparation
        paths.append(tmp_path / f"{i}.png")
        img.convert("RGB").resize((50 + 10 * i, 50)).save(paths[-1])
    loaded = load_run(run)
    prep = Preprocessing.from_dict(loaded.meta.get("preprocessing"))
    cached = np.stack([preprocess(p, prep.cache_size) for p in paths])  # [3, S', S', 3] uint8
    with torch.no_grad():
        want = loaded.model(eval_batch(cached, prep)).softmax(1).numpy()
    side, crop = prep.cache_size, prep.image_size
    top = (side - crop) // 2
    pixels = cached[:, top : top + crop, top : top + crop].transpose(0, 3, 1, 2).astype(np.float32) / 255
    (got,) = _session(run / "export" / "model.onnx").run(None, {"images": pixels})  # batch of 3: dynamic
    assert got.shape == (3, 3) and np.allclose(got, want, atol=1e-5)


def test_detector_onnx_gives_the_boxes_lanner_detects(shared_data, tmp_path):
    meta = {"task": "detect", "classes": ["rbc", "wbc"], "image_size": 64, "score_threshold": 0.0}
    run = save_untrained_detector(tmp_path / "det", meta)
    export_run(run)
    image = sorted((shared_data / "rbc_roboflow_coco" / "test").glob("*.jpg"))[0]
    canvas, (w, h) = load_letterboxed(image, 64)  # [64, 64, 3] uint8, as the spec describes
    boxes, scores, labels = _session(run / "export" / "model.onnx").run(
        None, {"images": canvas.transpose(2, 0, 1)[None].astype(np.float32) / 255}
    )
    loaded = load_run(run)
    (want,) = detect_canvases(loaded.model, canvas[None], np.array([[w, h]]), torch.device("cpu"))
    # The spec's recipe: divide by s, clip to the image, drop boxes left with no area.
    boxes = boxes / (64 / max(w, h))
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    assert real.sum() == len(want.boxes) > 0
    assert np.allclose(boxes[real], want.boxes, atol=1e-2)  # image pixels, as lanner reports them
    assert np.allclose(scores[real], want.scores, atol=1e-5) and np.array_equal(labels[real], want.labels)


def test_export_cli_writes_the_file_and_its_spec(tmp_path):
    run = save_untrained_classifier(tmp_path / "cls", ["a", "b"])
    out = tmp_path / "shipped" / "digits.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "lanner", "export", str(run), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert done.returncode == 0, done.stderr
    assert out.is_file() and json.loads(out.with_suffix(".json").read_text())["task"] == "classify"
    assert "ONNX Runtime matches PyTorch" in done.stdout
    assert {p.name for p in out.parent.iterdir()} == {"digits.json", "digits.onnx"}  # nothing temporary left
