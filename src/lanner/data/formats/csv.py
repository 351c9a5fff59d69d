"""CSV annotation files.

Two shapes share the extension: classification ``path,label`` (optionally ``split``) and
detection ``path,xmin,ymin,xmax,ymax,label``. The header decides which: any box column makes it
a detection CSV (one missing a coordinate column is an error naming it, never a label list).
Relative paths are resolved against the CSV's folder and must lie inside the dataset root
(:mod:`lanner.data.paths`); rows naming a file outside it are refused with an issue.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lanner.data.formats import Format, register_format
from lanner.data.paths import Confinement
from lanner.data.records import Dataset, ImageRecord, Issue, canonical_split
from lanner.data.validate import read_csv
from lanner.errors import DataError

PATH_COLUMNS = ("path", "filename", "file", "image", "image_path")
LABEL_COLUMNS = ("label", "class", "category", "class_name")
BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")


def _header(path: Path) -> list[str]:
    """The lower-cased header row, reading no further; a DataError naming the file if unreadable."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return [h.strip().lower() for h in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV ({e})") from e


def _pick(header: list[str], options: tuple[str, ...], path: Path, what: str) -> str:
    for name in options:
        if name in header:
            return name
    raise DataError(f"{path}: no {what} column; expected one of {', '.join(options)} in the header")


def _csv_file(path: Path) -> Path | None:
    if path.is_file() and path.suffix.lower() == ".csv":
        return path
    return None


def box_columns_in(header: list[str]) -> list[str]:
    return [c for c in BOX_COLUMNS if c in header]


def is_detection_csv(path: Path) -> bool:
    """Any box column makes a detection CSV: one missing a coordinate is a broken one, not a label list."""
    return bool(box_columns_in(_header(path)))


def sniff(path: Path) -> bool:
    f = _csv_file(path)
    return f is not None and not is_detection_csv(f)


def _row(
    path: Path, lineno: int, row: dict[str, str], columns: tuple[str, str]
) -> tuple[str, str, str | None]:
    file, label = (row.get(c, "") for c in columns)
    if not file or not label:
        raise DataError(f"{path}:{lineno}: empty {columns[0]!r} or {columns[1]!r}")
    return file, label, canonical_split(row.get("split") or None)


def read(path: Path, *, allow_outside_root: bool = False, strict: bool = False, **_) -> Dataset:
    header, raw_rows = read_csv(path)
    if box_columns_in(header):
        raise DataError(
            f"{path}: has box columns {box_columns_in(header)} but is read as a classification CSV; "
            f"a detection CSV needs all of {', '.join(BOX_COLUMNS)}"
        )
    columns = (_pick(header, PATH_COLUMNS, path, "image path"), _pick(header, LABEL_COLUMNS, path, "label"))
    rows = [(n, _row(path, n, row, columns)) for n, row in raw_rows]
    if not rows:
        raise DataError(f"{path}: no rows")
    within, base, issues = Confinement.of(path, allow_outside_root), path.parent, []
    kept = []
    for lineno, (file, label, split) in rows:
        image = base / file  # an absolute ``file`` replaces ``base``
        if within.contains(image):
            kept.append((image, label, split))
        else:
            issues.append(Issue(f"{path}:{lineno}", within.refusal(file), "skipped", "outside_root"))
    if strict and issues:
        raise DataError(f"{path}: {len(issues)} problem(s):\n  " + "\n  ".join(map(str, issues)))
    classes = sorted({label for _, label, _ in kept})
    index = {c: i for i, c in enumerate(classes)}
    records = [ImageRecord(path=image, label=index[label], split=split) for image, label, split in kept]
    return Dataset(classes, records, task="classify", root=base, format="csv", issues=issues)


def write(dataset: Dataset, out: Path) -> None:
    if dataset.task != "classify":
        raise DataError("use the detection CSV writer for boxes")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for r in dataset.records:
            if r.label is not None:
                w.writerow([str(r.path), dataset.classes[r.label], r.split or ""])


register_format(Format("csv", sniff, read, write, priority=40))
