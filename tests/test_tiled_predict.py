"""Streaming tiled inference, checked with a deterministic detector whose output is a real function
of the pixels: it finds bright squares by thresholding and connected components. No trained model
is needed to know where every square is, so coordinates can be checked exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from scipy import ndimage
from torchvision.ops import box_iou

from lanner.errors import DataError
from lanner.predict.tiled import Tiling, choose_batch_size, predict_tiled, prefetch

WHITE, YELLOW = (255, 255, 255), (255, 255, 0)


class BrightSquareDetector(torch.nn.Module):
    """Torchvision-style fake detector: boxes of the bright connected components of each input.

    Label 0 for white components, 1 for yellow ones (little blue); the score is the component's
    mean brightness, so blurred (downscaled) views score lower than sharp ones.
    """

    def __init__(self):
        super().__init__()
        self.input_sizes: list[tuple[int, int]] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [self._detect(img) for img in images]

    def _detect(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        assert img.dtype == torch.float32 and img.dim() == 3 and img.shape[0] == 3
        sample = img[:, ::64, ::64]
        assert float(sample.min()) >= 0.0 and float(sample.max()) <= 1.0
        self.input_sizes.append((img.shape[2], img.shape[1]))
        pixels = img.numpy()  # [3, H, W]
        brightness = (pixels[0] + pixels[1] + pixels[2]) / 3  # [H, W]; faster than mean(0)
        components, _ = ndimage.label(brightness > 0.5)
        boxes, scores, labels = [], [], []
        for k, (rows, cols) in enumerate(ndimage.find_objects(components), start=1):
            inside = components[rows, cols] == k  # the component within its bounding box
            boxes.append([cols.start, rows.start, cols.stop, rows.stop])
            scores.append(float(brightness[rows, cols][inside].mean()))
            labels.append(int(pixels[2, rows, cols][inside].mean() < 0.5))
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }


# Tile 1024 with 256 px overlap on 3000 x 2000: inner tile borders at x = 768, 1024, 1536, 1792,
# 1976, 2560 and y = 768, 976, 1024, 1792.
TILE, OVERLAP = 1024, 256
SQUARES = [  # (x0, y0, side, colour)
    (100, 100, 80, WHITE),  # inside one tile
    (980, 300, 100, WHITE),  # straddles x = 1024
    (700, 500, 120, WHITE),  # straddles x = 768
    (1500, 1000, 90, WHITE),  # on the corner of four borders
    (2500, 1700, 150, WHITE),  # straddles x = 2560, near the bottom
    (2900, 50, 100, WHITE),  # touches the image border
    (1000, 1500, 60, YELLOW),  # straddles x = 1024, another class
    (1070, 1500, 60, WHITE),  # right next to it, other class
    (1200, 120, 700, WHITE),  # too big for any tile to see whole: only pieces
]


def _expected(squares=SQUARES) -> list[tuple[list[float], int]]:
    return [([x, y, x + s, y + s], int(c == YELLOW)) for x, y, s, c in squares]


def _draw(path: Path, size: tuple[int, int], squares) -> Path:
    img = Image.new("RGB", size, (20, 30, 40))
    draw = ImageDraw.Draw(img)
    for x, y, side, colour in squares:
        draw.rectangle([x, y, x + side - 1, y + side - 1], fill=colour)  # inclusive corners
    img.save(path)
    return path


@pytest.fixture(scope="module")
def canvas(tmp_path_factory) -> Path:
    return _draw(tmp_path_factory.mktemp("tiled") / "canvas.png", (3000, 2000), SQUARES)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return _draw(tmp_path_factory.mktemp("tiled") / "small.png", (800, 600), [(10, 20, 50, WHITE)])


def _assert_each_square_once(boxes, labels, expected, min_iou=0.9):
    assert len(boxes) == len(expected), boxes.tolist()
    target = torch.tensor([box for box, _ in expected], dtype=torch.float32)
    iou = box_iou(target, torch.from_numpy(boxes))  # [expected, predicted]
    match = iou.argmax(1)
    assert sorted(match.tolist()) == list(range(len(expected)))  # one prediction per square
    for i, (_, label) in enumerate(expected):
        assert iou[i, match[i]] > min_iou, (expected[i], boxes[match[i]].tolist())
        assert labels[match[i]] == label


@pytest.mark.parametrize("merge", ["nms", "nmm", "wbf"])
def test_each_square_found_exactly_once_in_full_image_coordinates(canvas, merge):
    [(path, boxes, scores, labels)] = list(
        predict_tiled(BrightSquareDetector(), [canvas], Tiling(TILE, OVERLAP, batch_size=4, merge=merge))
    )
    assert path == canvas
    assert boxes.dtype == np.float32 and boxes.shape == (len(SQUARES), 4) and scores.shape == labels.shape
    _assert_each_square_once(boxes, labels, _expected())


def test_batch_composition_does_not_change_results(canvas, small):
    images = [small, canvas, small]
    runs = [
        list(
            predict_tiled(BrightSquareDetector(), images, Tiling(TILE, OVERLAP, merge="nmm", batch_size=size))
        )
        for size in (1, 5, 16)  # 16 > 14 tiles: one batch holds all three images
    ]
    assert [r[0] for r in runs[0]] == images  # input order
    for other in runs[1:]:
        for (_, b0, s0, l0), (_, b1, s1, l1) in zip(runs[0], other, strict=True):
            assert np.array_equal(b0, b1) and np.array_equal(s0, s1) and np.array_equal(l0, l1)
    # The small image passed through whole, as one input.
    _assert_each_square_once(runs[0][0][1], runs[0][0][3], _expected([(10, 20, 50, WHITE)]))


def test_full_image_pass_adds_one_downscaled_input_mapped_back(canvas, small):
    model = BrightSquareDetector()
    tiling = Tiling(TILE, OVERLAP, merge="nms", full_image_pass=True, full_image_size=1500)
    results = list(predict_tiled(model, [canvas, small], tiling))
    assert model.input_sizes.count((1500, 1000)) == 1  # the canvas, downscaled; not the small image
    assert len(model.input_sizes) == 12 + 1 + 1
    _assert_each_square_once(results[0][1], results[0][3], _expected())


def test_score_threshold_and_transform(canvas):
    def darken(x: torch.Tensor) -> torch.Tensor:
        return x * 0.6  # white stays above the 0.5 threshold, yellow (mean 0.67) falls below

    [(_, boxes, scores, labels)] = list(
        predict_tiled(BrightSquareDetector(), [canvas], Tiling(TILE, OVERLAP, merge="nmm"), transform=darken)
    )
    assert set(labels.tolist()) == {0}
    [(_, boxes, scores, _)] = list(
        predict_tiled(
            BrightSquareDetector(), [canvas], Tiling(TILE, OVERLAP, merge="nmm"), score_threshold=2.0
        )
    )
    assert boxes.shape == (0, 4)


def test_decompression_bomb_names_the_file_and_the_flag(canvas, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match=r"canvas\.png.*--max-image-pixels"):
        list(predict_tiled(BrightSquareDetector(), [canvas], Tiling(TILE, OVERLAP, merge="nmm")))


def test_unreadable_image_in_the_stream_raises_naming_it(canvas, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    stream = predict_tiled(BrightSquareDetector(), [canvas, broken], Tiling(TILE, OVERLAP, merge="nmm"))
    assert next(stream)[0] == canvas
    with pytest.raises(DataError, match="broken.jpg"):
        next(stream)


def test_unreadable_images_can_be_reported_and_skipped(canvas, small, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    failed = []
    model = BrightSquareDetector()
    stream = predict_tiled(
        model,
        [small, broken, canvas],
        Tiling(TILE, OVERLAP, merge="nmm", batch_size=8),
        on_error=lambda p, e: failed.append((p, str(e))),
    )
    results = list(stream)
    assert [r[0] for r in results] == [small, canvas]
    assert len(failed) == 1 and failed[0][0] == broken and "broken.jpg" in failed[0][1]
    _assert_each_square_once(results[1][1], results[1][3], _expected())  # the stream went on


def test_prefetch_stops_its_thread_when_the_consumer_stops():
    produced = []

    def numbers():
        for i in range(1000):
            produced.append(i)
            yield i

    stream = prefetch(numbers(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert len(produced) <= 3 + 2 + 1  # never ran far ahead, and stopped


def test_choose_batch_size_returns_a_candidate():
    assert choose_batch_size(BrightSquareDetector(), 256, candidates=(1, 2, 4), budget_s=2.0) in (1, 2, 4)


MEMORY_SCRIPT = """
import json, resource, sys
sys.path.insert(0, sys.argv[2])
import torch
from PIL import Image
from lanner.data.images import set_max_image_pixels
from lanner.predict.tiled import Tiling, predict_tiled
from test_tiled_predict import BrightSquareDetector

torch.set_num_threads(2)
set_max_image_pixels(200_000_000)
model = BrightSquareDetector()
Image.new("RGB", (1500, 1500)).save(sys.argv[3])
tiling = Tiling(1024, 64, merge="nmm", batch_size=4)
list(predict_tiled(model, [sys.argv[3]], tiling))  # warm up lazy allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
[(_, boxes, _, _)] = list(predict_tiled(model, [sys.argv[1]], tiling))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_increase_mb": (after - before) / 1024, "boxes": boxes.tolist()}))
"""

HUGE_SQUARES = [(500, 500, 300, WHITE), (4990, 5010, 200, WHITE), (9700, 9700, 300, WHITE)]


def test_memory_stays_bounded_on_a_10000_px_jpeg(tmp_path):
    """A float32 copy of a 10,000 x 10,000 RGB image alone is 1.2 GB; the predictor must not make one.

    Runs in a fresh interpreter so the peak RSS measured is the prediction's, not the test run's.
    """
    huge = tmp_path / "huge.jpg"
    draw = "from PIL import Image, ImageDraw; import sys\n" + (
        "img = Image.new('RGB', (10000, 10000), (20, 30, 40)); d = ImageDraw.Draw(img)\n"
        f"for x, y, s, c in {HUGE_SQUARES!r}: d.rectangle([x, y, x + s - 1, y + s - 1], fill=c)\n"
        "img.save(sys.argv[1], quality=90)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    subprocess.run([sys.executable, "-c", draw, str(huge)], check=True, env=env, timeout=120)
    tests_dir = str(Path(__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(huge), tests_dir, str(tmp_path / "warm.png")],
        check=True, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"peak RSS increase for a 10,000 x 10,000 JPEG: {result['peak_increase_mb']:.0f} MB")
    # The 8-bit decode (Pillow keeps RGB as 4 bytes/pixel: ~400 MB) dominates; 1.2 GB is the float copy.
    assert result["peak_increase_mb"] < 600
    _assert_each_square_once(np.array(result["boxes"], np.float32), np.zeros(3, int), _expected(HUGE_SQUARES))
