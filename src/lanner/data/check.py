"""`lanner check`: read a dataset, verify every image, summarise, and list every problem with its file."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lanner.data.formats import read_dataset
from lanner.data.images import open_image
from lanner.data.records import Dataset, Issue
from lanner.errors import DataError


def _verify(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """Decode fully (truncated files only fail on decode) and return the upright size."""
    try:
        return open_image(path).size, None
    except DataError as e:
        return None, str(e).split(": ", 1)[-1]


def verify_images(dataset: Dataset, workers: int = 4) -> list[Issue]:
    """Fill in width/height of every record; return an issue per unreadable image."""
    issues = []
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow releases the GIL while decoding
        results = list(pool.map(_verify, [r.path for r in dataset.records]))
    for rec, (size, err) in zip(dataset.records, results, strict=True):
        if size is None:
            issues.append(Issue(str(rec.path), err or "unreadable", action="skipped", kind="unreadable"))
        else:
            rec.width, rec.height = size
    return issues


def _size_stats(values: list[int]) -> dict:
    if not values:
        return {}
    a = np.array(values)
    return {
        "min": int(a.min()),
        "median": float(np.median(a)),
        "max": int(a.max()),
        "mean": round(float(a.mean()), 1),
    }


def summarise(dataset: Dataset, issues: list[Issue]) -> dict:
    """Everything `lanner check` prints, as plain data (also saved as data_check.json in each run)."""
    counts = dataset.class_counts()
    nonzero = [c for c in counts.values() if c > 0]
    widths = [r.width for r in dataset.records if r.width]
    heights = [r.height for r in dataset.records if r.height]
    per_split = {}
    for r in dataset.records:
        per_split[r.split or "unsplit"] = per_split.get(r.split or "unsplit", 0) + 1
    all_issues = list(dataset.issues) + list(issues)
    summary = {
        "path": str(dataset.root),
        "format": dataset.format,
        "task": dataset.task,
        "num_images": len(dataset.records),
        "num_classes": len(dataset.classes),
        "classes": dataset.classes,
        "images_per_split": per_split,
        ("images_per_class" if dataset.task == "classify" else "boxes_per_class"): counts,
        "imbalance_ratio": round(max(nonzero) / min(nonzero), 2) if nonzero else None,
        "empty_classes": [c for c, n in counts.items() if n == 0],
        "width": _size_stats(widths),
        "height": _size_stats(heights),
        "num_issues": len(all_issues),
        "issues": [
            {"path": i.path, "problem": i.problem, "action": i.action, "kind": i.kind} for i in all_issues
        ],
    }
    if dataset.task == "detect":
        summary["images_without_boxes"] = sum(1 for r in dataset.records if r.num_boxes == 0)
        summary["num_boxes"] = sum(r.num_boxes for r in dataset.records)
    return summary


def check_dataset(
    path: str | Path,
    format: str | None = None,
    *,
    strict: bool = False,
    workers: int = 4,
    allow_outside_root: bool = False,
) -> dict:
    dataset = read_dataset(path, format, strict=strict, allow_outside_root=allow_outside_root)
    issues = verify_images(dataset, workers)
    summary = summarise(dataset, issues)
    if strict and summary["num_issues"]:
        listed = "\n".join(f"  {i['path']}: {i['problem']}" for i in summary["issues"][:50])
        raise DataError(f"{path}: {summary['num_issues']} problem(s) found (--strict):\n{listed}")
    return summary
