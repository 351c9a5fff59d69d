"""`lanner demo --task detect`: small objects on large images, where tiling matters.

Real handwritten digits from scikit-learn (8x8, upscaled to 24-40 px) are scattered over large
canvases with a noisy, textured background, and written as a COCO dataset with train and val
splits. A detector trains on tiles of those canvases and predicts the full images tile by tile;
the same model run on the whole canvas downscaled to its input size is printed next to it.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image
from rich.console import Console

from lanner.config import make_config
from lanner.data.formats import write_dataset
from lanner.data.records import Dataset, ImageRecord

DEMO_DIGITS = (0, 1, 2, 3)  # four classes keep the demo short on a CPU


def _digit_bank():
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.isin(digits.target, DEMO_DIGITS)
    return digits.images[keep], digits.target[keep]


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency texture plus noise: no object-free shortcut for the detector."""
    coarse = rng.uniform(20, 90, (size // 128 + 2, size // 128 + 2, 3)).astype(np.uint8)
    base = np.asarray(
        Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32
    )
    base += rng.standard_normal(base.shape, dtype=np.float32) * 8
    return base


def make_canvas(size: int, n_objects: int, rng: np.random.Generator, bank) -> tuple[Image.Image, list, list]:
    """One canvas with ``n_objects`` non-overlapping digits; returns (image, boxes xyxy, class indices)."""
    images, targets = bank
    canvas = _background(size, rng)
    boxes, labels = [], []
    attempts = 0
    while len(boxes) < n_objects and attempts < n_objects * 50:
        attempts += 1
        side = int(rng.integers(24, 41))
        x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
        box = [x0, y0, x0 + side, y0 + side]
        if any(
            not (box[2] < b[0] - 4 or box[0] > b[2] + 4 or box[3] < b[1] - 4 or box[1] > b[3] + 4)
            for b in boxes
        ):
            continue
        i = int(rng.integers(len(images)))
        glyph = (
            np.asarray(
                Image.fromarray((images[i] * 15.9).astype(np.uint8)).resize(
                    (side, side), Image.Resampling.BICUBIC
                ),
                dtype=np.float32,
            )
            / 255.0
        )  # [side, side] ink in 0..1
        colour = rng.uniform(170, 255, 3)
        patch = canvas[y0 : y0 + side, x0 : x0 + side]
        canvas[y0 : y0 + side, x0 : x0 + side] = patch * (1 - glyph[..., None]) + colour * glyph[..., None]
        # The box is the digit's ink extent, as a person would draw it.
        ys, xs = np.nonzero(glyph > 0.15)
        boxes.append([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1])
        labels.append(DEMO_DIGITS.index(int(targets[i])))
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    return img, boxes, labels


def write_digit_canvases(
    out: Path,
    *,
    n_train: int = 12,
    n_val: int = 4,
    size: int = 2048,
    objects: tuple[int, int] = (25, 45),
    seed: int = 0,
) -> Path:
    """Write the canvases as a COCO dataset in Roboflow's layout (``out/{train,val}/`` with
    ``_annotations.coco.json``); returns ``out``."""
    rng = np.random.default_rng(seed)
    bank = _digit_bank()
    staging = out.parent / f".{out.name}-staging"
    staging.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n_train + n_val):
        split = "train" if i < n_train else "val"
        img, boxes, labels = make_canvas(size, int(rng.integers(*objects)), rng, bank)
        path = staging / f"{split}_{i:03d}.jpg"
        img.save(path, quality=90)
        records.append(
            ImageRecord(
                path=path,
                width=size,
                height=size,
                split=split,
                boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
                labels=np.array(labels, dtype=np.int64),
            )
        )
    dataset = Dataset([f"digit{d}" for d in DEMO_DIGITS], records, task="detect", root=out, format="coco")
    write_dataset(dataset, "coco", out)  # hard-links the images into out/<split>/
    shutil.rmtree(staging)
    return out


def run_detect_demo(
    api: ModuleType,
    run: str | None = None,
    data_dir: Path | None = None,
    console: Console | None = None,
    minutes: float = 3.0,
) -> Path:
    console = console or Console()
    start = time.perf_counter()
    ann = write_digit_canvases(Path(data_dir or "runs/demo-data/digit-canvases"))
    console.print(f"wrote large canvases with small handwritten digits to {ann} (COCO, train/ and val/)")
    config = make_config(
        {
            "data": str(ann),
            "run": run,
            "task": "detect",
            "tile": 256,
            "overlap": 0.25,
            "time": f"{minutes:g}m",
            "hflip": False,
        }
    )
    run_dir = api.train(config, console, evaluate_after=False)  # evaluated below, tiled and not
    console.print("the same model on the whole canvas, downscaled to one model input (no tiling):")
    whole = api.evaluate(run_dir, str(ann), "val", console=console, report=False, tile=0)
    console.print("tiled, as trained:")
    tiled = api.evaluate(run_dir, str(ann), "val", console=console, report=True)
    console.print(
        f"full-image mAP@.5 on the val canvases: tiled {tiled['map50']:.3f} vs whole image downscaled "
        f"{whole['map50']:.3f} (mAP@[.5:.95] {tiled['map']:.3f} vs {whole['map']:.3f})"
    )
    console.print(f"demo finished in {time.perf_counter() - start:.0f}s; everything is in [bold]{run_dir}[/]")
    return run_dir
