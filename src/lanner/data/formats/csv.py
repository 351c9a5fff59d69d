"""CSV annotation files.

Two shapes share the extension: classification ``path,label`` (optionally ``split``) and
detection ``path,xmin,ymin,xmax,ymax,label``. The header decides which. Relative paths are
resolved against the CSV's folder.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lanner.data.formats import Format, register_format
from lanner.data.records import Dataset, ImageRecord, canonical_split
from lanner.errors import DataError

PATH_COLUMNS = ("path", "filename", "file", "image", "image_path")
LABEL_COLUMNS = ("label", "class", "category", "class_name")
BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        return [h.strip().lower() for h in next(csv.reader(f), [])]


def _pick(header: list[str], options: tuple[str, ...], path: Path, what: str) -> str:
    for name in options:
        if name in header:
            return name
    raise DataError(f"{path}: no {what} column; expected one of {', '.join(options)} in the header")


def _csv_file(path: Path) -> Path | None:
    if path.is_file() and path.suffix.lower() == ".csv":
        return path
    return None


def is_detection_csv(path: Path) -> bool:
    return all(c in _header(path) for c in BOX_COLUMNS)


def sniff(path: Path) -> bool:
    f = _csv_file(path)
    return f is not None and not is_detection_csv(f)


def read(path: Path, **_) -> Dataset:
    header = _header(path)
    path_col = _pick(header, PATH_COLUMNS, path, "image path")
    label_col = _pick(header, LABEL_COLUMNS, path, "label")
    rows = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        reader.fieldnames = [h.strip().lower() for h in reader.fieldnames or []]
        for lineno, row in enumerate(reader, start=2):
            file, label = (row.get(path_col) or "").strip(), (row.get(label_col) or "").strip()
            if not file or not label:
                raise DataError(f"{path}:{lineno}: empty {path_col!r} or {label_col!r}")
            rows.append((file, label, canonical_split((row.get("split") or "").strip() or None)))
    if not rows:
        raise DataError(f"{path}: no rows")
    classes = sorted({label for _, label, _ in rows})
    index = {c: i for i, c in enumerate(classes)}
    base = path.parent
    records = [
        ImageRecord(
            path=(base / file) if not Path(file).is_absolute() else Path(file),
            label=index[label],
            split=split,
        )
        for file, label, split in rows
    ]
    return Dataset(classes, records, task="classify", root=base, format="csv")


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
