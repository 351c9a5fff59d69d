"""Geometric augmentation (rotate, shear, translate, scale; data/affine.py) on whole batches: boxes
follow the pixels, and `--set augment.rotate=15` reaches training."""

from __future__ import annotations

import numpy as np
import torch
import yaml
from helpers import write_tiny_class_folders

from lanner import api, cli  # api first: it imports the package in order (cli's api is lazy)
from lanner.config import make_config
from lanner.data.box_transforms import BoxTargets, augment_detection_batch
from lanner.data.pixels import Preprocessing
from lanner.tasks.classify.training import augment_batch


def _canvases(n: int) -> tuple[np.ndarray, list[BoxTargets]]:
    """Grey 64 px canvases, each with one white 16 x 12 object at a known place."""
    images = np.full((n, 64, 64, 3), 100, np.uint8)
    images[:, 20:32, 24:40] = 255
    return images, [BoxTargets(np.array([[24, 20, 40, 32]], np.float32), np.array([0])) for _ in range(n)]


def test_boxes_follow_rotation_translation_and_scale():
    images, targets = _canvases(16)
    g = torch.Generator().manual_seed(0)
    x, out = augment_detection_batch(images, targets, preset="none", hflip=False, min_visibility=0.5, g=g,
                                     geometry=(30.0, 0.0, 0.1, 0.1))  # fmt: skip
    moved = 0
    for image, t in zip(x, out, strict=True):
        (box,) = t.boxes  # the object stays inside the canvas at these settings
        ys, xs = np.nonzero(image.mean(0).numpy() > 0.75)  # the object's pixels after the warp
        pixels = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert (box[:2] <= pixels[:2] + 1).all() and (box[2:] >= pixels[2:] - 1).all()  # encloses them
        area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
        assert area(box) <= 1.9 * area(pixels) + 40  # at most the rotated box's enclosing box
        moved += not np.allclose(box, [24, 20, 40, 32], atol=1)
    assert moved >= 14


def test_no_geometry_leaves_batches_as_they_were():
    images = np.random.default_rng(0).integers(0, 255, (4, 18, 18, 3), dtype=np.uint8)
    prep = Preprocessing(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    a = augment_batch(images, prep, "light", True, torch.Generator().manual_seed(3))
    b = augment_batch(images, prep, "light", True, torch.Generator().manual_seed(3), "cpu", (0, 0, 0, 0))
    c = augment_batch(images, prep, "light", True, torch.Generator().manual_seed(3), "cpu", (20, 5, 0.1, 0.1))
    assert torch.equal(a, b) and c.shape == a.shape and not torch.allclose(a, c)


def test_augment_settings_are_config_keys(tmp_path):
    assert make_config({"data": "x", "augment": "strong"}, "t").augment.geometry() == (10.0, 5.0, 0.1, 0.1)
    assert (
        make_config({"data": "x", "augment": {"name": "light", "rotate": 15}}, "t").augment.geometry()[0]
        == 15
    )
    data = write_tiny_class_folders(tmp_path / "data", per_class=4)
    args = ["train", str(data), "--run", str(tmp_path / "run"), "--model", "test_resnet",
            "--image-size", "16", "--epochs", "1", "--no-eval", "--cache-dir", str(tmp_path / "cache"),
            "--augment", "light", "--set", "augment.rotate=15", "--set", "augment.shear=5"]  # fmt: skip
    assert cli.run_cli(args) == 0 and api.is_run(tmp_path / "run")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["augment"]
    assert saved["name"] == "light" and saved["rotate"] == 15 and saved["shear"] == 5
    assert cli.run_cli([*args[:-4], "--set", "augment.rotate=400"]) == 2  # out of range: named, exit 2
