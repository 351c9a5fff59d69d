"""history.csv and segments.json: every number shown on screen is also on disk, appended per epoch."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from lanner._io import write_json, write_text

FIRST_COLUMNS = ["epoch", "segment", "lr", "train_loss", "val_loss"]
LAST_COLUMNS = ["epoch_time_s", "images_per_s"]


def columns_for(row: dict) -> list[str]:
    middle = sorted(k for k in row if k not in FIRST_COLUMNS and k not in LAST_COLUMNS)
    return FIRST_COLUMNS + middle + LAST_COLUMNS


def write_history(path: str | Path, rows: list[dict]) -> None:
    """Rewrite history.csv from the run's rows (atomic; the checkpoint holds the same rows)."""
    if not rows:
        return
    # Every row's columns: a resumed old run gains new ones, a partial last epoch adds its own.
    cols = columns_for({k: None for row in rows for k in row})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in cols})
    write_text(path, buf.getvalue())


def read_history(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [dict(r) for r in csv.DictReader(f)]


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def overfitting_start(rows: list[dict], monitor: str, patience: int = 3) -> dict | None:
    """When ``monitor`` (a val_ metric) has not improved for ``patience`` epochs or more while the same
    metric on training images (train_...) got better since: {"epoch": the first epoch after the best,
    "best_epoch", "monitor", "train_metric"}; else None (including when train metrics are absent)."""
    train_key = "train_" + monitor.removeprefix("val_")
    val = [_number(r.get(monitor)) for r in rows]
    train = [_number(r.get(train_key)) for r in rows]
    if not monitor.startswith("val_") or not any(v is not None for v in val):
        return None
    sign = -1.0 if "loss" in monitor else 1.0
    best = max((i for i, v in enumerate(val) if v is not None), key=lambda i: (sign * val[i], -i))
    if len(rows) - 1 - best < patience or train[best] is None or train[-1] is None:
        return None
    if sign * (train[-1] - train[best]) <= 0:  # train did not improve either: a plateau, not over-fitting
        return None
    best_epoch = int(float(rows[best]["epoch"]))
    return {"epoch": best_epoch + 1, "best_epoch": best_epoch, "monitor": monitor, "train_metric": train_key}


def write_segments(path: str | Path, segments: list[dict]) -> None:
    write_json(path, segments)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
