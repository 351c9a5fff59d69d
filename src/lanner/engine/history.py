"""history.csv and segments.json: every number shown on screen is also on disk, appended per epoch."""

from __future__ import annotations

import csv
import io
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
    cols = columns_for({k: None for row in rows for k in row})  # a partial last epoch adds a column
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


def write_segments(path: str | Path, segments: list[dict]) -> None:
    write_json(path, segments)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
