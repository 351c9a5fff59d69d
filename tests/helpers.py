"""Small real datasets written to disk for tests (scikit-learn's handwritten digits as images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def digit_images(label: int, count: int, size: int = 24) -> list[Image.Image]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    idx = np.flatnonzero(digits.target == label)[:count]
    return [
        Image.fromarray((digits.images[i] * 15.9).astype(np.uint8), mode="L").resize((size, size))
        for i in idx
    ]


def write_digit_folders(
    root: Path, labels=(0, 1, 7), per_class: int = 16, splits: tuple[str, ...] = ()
) -> Path:
    """``root/[split/]<digit>/<n>.png`` with real digits; class folders named after the digit."""
    for label in labels:
        images = digit_images(label, per_class * max(1, len(splits)))
        for n, img in enumerate(images):
            split = splits[n % len(splits)] if splits else ""
            folder = root / split / f"digit{label}"
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / f"{n:03d}.png")
    return root
