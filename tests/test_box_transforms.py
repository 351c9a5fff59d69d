"""Letterboxing and box-aware batch augmentation: boxes must keep framing the pixels they label."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lanner.data.box_transforms import (
    FILL,
    BoxTargets,
    augment_detection_batch,
    build_letterbox_cache,
    hflip_targets,
    letterbox,
    scaled_targets,
    window_targets,
)


def test_letterbox_keeps_aspect_at_the_top_left():
    img = Image.new("RGB", (200, 100), (255, 255, 255))
    canvas = letterbox(img, 64)  # scale 0.32 -> 64 x 32 of image, the rest padding
    assert canvas.shape == (64, 64, 3) and canvas.dtype == np.uint8
    assert (canvas[:32, :64] == 255).all()
    assert (canvas[32:] == np.array(FILL, dtype=np.uint8)).all()


def test_letterbox_cache_records_original_sizes(tmp_path):
    paths = []
    for i, size in enumerate([(120, 80), (50, 90)]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", size, (10, 20, 30)).save(paths[-1])
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths.append(tmp_path / "broken.jpg")
    cache = build_letterbox_cache(paths, 32, tmp_path / "cache")
    assert cache.images.shape == (3, 32, 32, 3)
    assert cache.sizes.tolist() == [[120, 80], [50, 90], [0, 0]]
    assert cache.ok.tolist() == [True, True, False] and len(cache.issues) == 1
    assert cache.scales[:2] == pytest.approx([32 / 120, 32 / 90])
    again = build_letterbox_cache(paths, 32, tmp_path / "cache")  # reused, not rebuilt
    assert again.sizes.tolist() == cache.sizes.tolist()


def test_crowd_boxes_are_left_out_of_training_targets():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 50, 50]], dtype=np.float32)
    t = scaled_targets(boxes, np.array([0, 1]), np.array([False, True]), 0.5)
    assert t.boxes.tolist() == [[0, 0, 5, 5]] and t.labels.tolist() == [0]


def test_hflip_mirrors_boxes():
    t = hflip_targets(BoxTargets(np.array([[10, 5, 30, 20]], np.float32), np.array([1])), 100)
    assert t.boxes.tolist() == [[70, 5, 90, 20]]


def test_window_keeps_visible_boxes_only():
    t = BoxTargets(np.array([[10, 10, 30, 30], [90, 90, 110, 110]], np.float32), np.array([0, 1]))
    # A 100 px window shown at 50 px: the second box is a quarter inside -> dropped at min_visibility 0.5.
    out = window_targets(t, np.array([0, 0, 100, 100]), 50, min_visibility=0.5)
    assert out.boxes.tolist() == [[5, 5, 15, 15]] and out.labels.tolist() == [0]


def _white_squares(n: int, side: int) -> tuple[np.ndarray, list[BoxTargets]]:
    images = np.empty((n, side, side, 3), np.uint8)
    images[:] = FILL
    targets = []
    rng = np.random.default_rng(0)
    for i in range(n):
        x0, y0 = rng.integers(4, side - 28, size=2)
        images[i, y0 : y0 + 24, x0 : x0 + 24] = 255
        targets.append(BoxTargets(np.array([[x0, y0, x0 + 24, y0 + 24]], np.float32), np.array([0])))
    return images, targets


@pytest.mark.parametrize("preset", ["none", "light", "default", "strong"])
def test_augmented_boxes_still_frame_their_objects(preset):
    images, targets = _white_squares(16, 96)
    g = torch.Generator().manual_seed(1)
    x, out = augment_detection_batch(images, targets, preset=preset, hflip=True, min_visibility=0.9, g=g)
    assert x.shape == (16, 3, 96, 96) and x.min() >= 0 and x.max() <= 1
    kept = 0
    for img, t in zip(x, out, strict=True):
        for x0, y0, x1, y1 in t.boxes.round().astype(int):
            inner = img[:, y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]  # inside the box, away from blurred edges
            background = img.median()  # jittered mean grey: most of the canvas
            assert inner.numel() == 0 or inner.mean() > background + 0.15, "box no longer on the white square"
            kept += 1
    assert kept >= 8  # most squares survive the crops


def test_augmentation_is_reproducible_from_the_generator():
    images, targets = _white_squares(4, 64)
    a = augment_detection_batch(
        images, targets, preset="default", hflip=True, min_visibility=0.5, g=torch.Generator().manual_seed(3)
    )
    b = augment_detection_batch(
        images, targets, preset="default", hflip=True, min_visibility=0.5, g=torch.Generator().manual_seed(3)
    )
    assert torch.equal(a[0], b[0])
    assert all(np.array_equal(p.boxes, q.boxes) for p, q in zip(a[1], b[1], strict=True))
