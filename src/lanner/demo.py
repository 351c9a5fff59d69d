"""`lanner demo`: the whole job on real data that ships with scikit-learn (no download).

scikit-learn carries 1,797 real 8x8 handwritten digits (UCI optdigits). The demo writes them as an
image-folder dataset with a held-out test split, trains a small classifier, evaluates it on the test
split, predicts a few files and writes the report.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image
from rich.console import Console

from lanner.config import make_config
from lanner.demo_detect import run_detect_demo

DIGIT_SIZE = 32  # pixels of the written PNGs (upscaled from 8x8)


def write_digits(out: Path, test_fraction: float = 0.2, seed: int = 0) -> Path:
    """Write sklearn's digits as ``out/{train,test}/<digit>/<n>.png``; returns ``out``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    for label in range(10):
        idx = np.flatnonzero(digits.target == label)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        for rank, i in enumerate(idx):
            split = "test" if rank < n_test else "train"
            folder = out / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * (255.0 / 16.0)).astype(np.uint8)
            img = Image.fromarray(pixels, mode="L").resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BICUBIC)
            img.save(folder / f"{i:04d}.png")
    return out


def run_demo(
    api: ModuleType,
    task: str = "classify",
    run: str | None = None,
    data_dir: Path | None = None,
    console: Console | None = None,
) -> Path:
    """The demo drives ``api`` (lanner.api, handed over so the demo sits beside it without a cycle)."""
    console = console or Console()
    if task == "detect":
        return run_detect_demo(api, run=run, data_dir=data_dir, console=console)
    start = time.perf_counter()
    data = write_digits(Path(data_dir or "runs/demo-data/digits"))
    console.print(f"wrote scikit-learn's handwritten digits to {data} (train/ and test/ class folders)")
    config = make_config(
        {
            "data": str(data),
            "run": run,
            "model": "resnet18",
            "image_size": 32,
            "batch_size": 64,
            "epochs": 12,
            "lr": 3e-3,
            "schedule": {"name": "onecycle"},
            "augment": "light",
            "hflip": False,
            "weight_decay": 0.01,
        }
    )
    run_dir = api.train(config, console)
    samples = sorted((data / "test").glob("*/*.png"))[::60][:6]
    rows = api.predict(run_dir, [str(p) for p in samples], console=console)
    for row in rows:
        console.print(
            f"  {row['path']}: predicted {row['label']} ({float(row['score']):.3f})", highlight=False
        )
    console.print(
        f"demo finished in {time.perf_counter() - start:.0f}s; everything is in [bold]{run_dir}[/]: "
        "config.yaml, history.csv, plots/curves.png, checkpoints/, metrics.json, eval/, report.html"
    )
    return run_dir
