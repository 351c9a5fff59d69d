"""`lanner crops DATA OUT`: every ground-truth box of a detection dataset as an image in class folders.

The crops form a classification dataset lanner trains on (``OUT/[split/]class/stem_N.png``, the
source's train/val/test splits kept, so no object's crop leaks from train into val), plus
``OUT/crops.csv`` mapping each crop back to its source image, box, the padded region cut and the
padding (the two-stage pipeline cuts detected boxes with the classifier's padding; no other file
sits in OUT's top level, so lanner reads OUT as class folders). Crops are PNG: their pixels are
exactly the source's.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lanner._io import write_atomic, write_text
from lanner.data.formats import read_dataset
from lanner.data.images import open_image
from lanner.data.records import ImageRecord
from lanner.errors import ConfigError, DataError

CROPS_CSV = "crops.csv"
DEFAULT_PAD = 0.1
CSV_COLUMNS = [
    "crop",
    "source",
    "split",
    "label",
    "box_xmin",
    "box_ymin",
    "box_xmax",
    "box_ymax",
    "crop_xmin",
    "crop_ymin",
    "crop_xmax",
    "crop_ymax",
    "pad",
]  # fmt: skip  (not xmin...: a box CSV in OUT would make lanner read the folder as a detection CSV)


@dataclass
class CropSummary:
    """What ``lanner crops`` wrote: crops per class, boxes left out (and why), unreadable images."""

    out: Path
    per_class: dict[str, int]
    too_small: int = 0
    crowd: int = 0
    keep_splits: bool = False  # crops go to OUT/split/class when the source has a train split
    unreadable: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(self.per_class.values())


def crop_region(box, width: int, height: int, pad: float) -> tuple[int, int, int, int]:
    """The pixel region cut for ``box`` (xyxy): widened by ``pad`` x its width/height on each side,
    rounded outwards to whole pixels, clipped to the image, never empty."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = pad * (x1 - x0), pad * (y1 - y0)
    left = min(max(0, math.floor(x0 - dx)), width - 1)
    top = min(max(0, math.floor(y0 - dy)), height - 1)
    right = max(min(width, math.ceil(x1 + dx)), left + 1)
    bottom = max(min(height, math.ceil(y1 + dy)), top + 1)
    return left, top, right, bottom


def _check_arguments(out: Path, pad: float, min_size: float) -> None:
    if pad < 0 or min_size < 0:
        raise ConfigError(f"--pad {pad:g} / --min-size {min_size:g}: both must be >= 0")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: already exists and is not an empty folder; give a new OUT folder")


def _read_boxes(data: str, format: str | None, allow_outside_root: bool):
    dataset = read_dataset(data, format, allow_outside_root=allow_outside_root)
    if dataset.task != "detect":
        raise DataError(f"{data}: a {dataset.task} dataset ({dataset.format}); `lanner crops` needs boxes")
    if not any(r.num_boxes for r in dataset.records):
        raise DataError(f"{data}: no boxes to crop in {len(dataset.records)} image(s)")
    return dataset


def _unique_name(folder: Path, stem: str, index: int, taken: set[Path]) -> Path:
    target, n = folder / f"{stem}_{index:03d}.png", 1
    while target in taken:  # two sources with one file name (from different folders)
        n += 1
        target = folder / f"{stem}-{n}_{index:03d}.png"
    taken.add(target)
    return target


def _crop_record(record: ImageRecord, classes, out: Path, settings: tuple[float, float], state) -> list[list]:
    """Write the crops of one image; its csv rows. ``state``: (summary, names taken)."""
    pad, min_size = settings
    summary, taken = state
    img = open_image(record.path)
    rows = []
    for i, (box, label) in enumerate(zip(record.boxes, record.labels, strict=True)):
        if i < len(record.iscrowd) and record.iscrowd[i]:
            summary.crowd += 1
            continue
        if min(box[2] - box[0], box[3] - box[1]) < min_size:
            summary.too_small += 1
            continue
        region = crop_region(box, img.width, img.height, pad)
        name = classes[int(label)]
        split = (record.split or "") if summary.keep_splits else ""
        target = _unique_name(out / split / name, record.path.stem, i, taken)
        write_atomic(target, lambda p, r=region: img.crop(r).save(p, format="PNG"))
        summary.per_class[name] += 1
        rows.append([target.relative_to(out).as_posix(), str(record.path), record.split or "", name,
                     *np.round(box, 2).tolist(), *region, pad])  # fmt: skip
    return rows


def write_crops(
    data: str, out: str | Path, pad: float = DEFAULT_PAD, min_size: float = 16, format: str | None = None,
    allow_outside_root: bool = False,
) -> CropSummary:  # fmt: skip
    """Cut every ground-truth box of ``data`` whose shorter side is at least ``min_size`` px (crowd
    boxes left out) into ``out``; unreadable images are listed in the summary and skipped."""
    out = Path(out)
    _check_arguments(out, pad, min_size)
    dataset = _read_boxes(data, format, allow_outside_root)
    summary = CropSummary(out, dict.fromkeys(dataset.classes, 0), keep_splits="train" in dataset.splits)
    rows, taken = [], set()
    for record in dataset.records:
        try:
            rows += _crop_record(record, dataset.classes, out, (pad, min_size), (summary, taken))
        except DataError as e:
            summary.unreadable.append(str(e))
    if not rows:
        raise DataError(f"{data}: no box has a shorter side of {min_size:g} px or more; lower --min-size")
    _write_index(out, rows)
    return summary


def _write_index(out: Path, rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    write_text(out / CROPS_CSV, buffer.getvalue())


def crops_pad(folder: str | Path | None) -> float | None:
    """The padding a crops folder (a classifier's training data) was cut with; None when it is none."""
    path = Path(folder) / CROPS_CSV if folder else None
    if path is None or not path.is_file():
        return None
    with path.open(newline="") as f:
        first = next(csv.DictReader(f), None)
    try:
        return float(first["pad"]) if first else None
    except (KeyError, TypeError, ValueError):
        return None


def crop_images(img: Image.Image, boxes: np.ndarray, pad: float) -> list[Image.Image]:
    """The regions :func:`crop_region` cuts for ``boxes`` [K, 4] out of one image."""
    return [img.crop(crop_region(b, img.width, img.height, pad)) for b in boxes]
