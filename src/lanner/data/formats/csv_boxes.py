"""Detection CSV: one row per box, ``path,xmin,ymin,xmax,ymax,label`` (pixels, xyxy).

Column names are matched like the classification CSV (``filename``/``image`` for the path,
``class`` for the label), so the TF Object Detection API CSVs (raccoon_dataset's
``filename,width,height,class,xmin,ymin,xmax,ymax``) read as they are; optional ``width``/
``height`` are checked against the image and ``split`` sets the split. A row with empty box
columns is an image without boxes (a negative). Relative paths are resolved against the CSV's
folder, then ``images/`` beside it and the folder above (raccoon keeps CSVs in ``data/``), and
must lie inside the dataset root (:mod:`lanner.data.paths`).
A ``classes.txt`` beside the CSV fixes the class list.

Writing to a ``.csv`` path writes only the CSV, pointing at the images where they are; writing
to a folder copies the images into ``images/`` and writes ``annotations.csv`` and ``classes.txt``
(so classes without boxes survive).
Coordinates are written to 2 decimals.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from lanner.data.formats import Format, annotation_file, register_format
from lanner.data.formats.csv import (
    BOX_COLUMNS,
    LABEL_COLUMNS,
    PATH_COLUMNS,
    box_columns_in,
    is_detection_csv,
)
from lanner.data.paths import Confinement
from lanner.data.records import Dataset, canonical_split
from lanner.data.validate import (
    IGNORE_LABEL,
    DetectionBuilder,
    RawBox,
    format_number,
    label_names,
    number_list,
    place_image,
    read_class_file,
    read_csv,
    require_detection,
    resolve_image,
)
from lanner.errors import DataError

ANNOTATION_FILE = "annotations.csv"
WRITE_COLUMNS = ["path", "xmin", "ymin", "xmax", "ymax", "label", "width", "height", "split"]


def _box_csv(path: Path) -> Path | None:
    """``path`` when it is a detection CSV, or the one detection CSV at the top of a folder."""
    return annotation_file(path, ".csv", is_detection_csv, ANNOTATION_FILE)


def sniff(path: Path) -> bool:
    return _box_csv(path) is not None


def _column(header: list[str], options: tuple[str, ...]) -> str | None:
    return next((c for c in options if c in header), None)


def _group_by_image(path: Path, rows, path_col: str, label_col: str) -> dict[str, dict]:
    """Image name -> its boxes, claimed size and split, in the order images first appear."""
    images: dict[str, dict] = {}
    for lineno, row in rows:
        name = row.get(path_col, "")
        if not name:
            raise DataError(f"{path}:{lineno}: empty {path_col!r}")
        entry = images.setdefault(name, {"boxes": [], "size": None, "split": None, "line": lineno})
        if row.get("width") and row.get("height"):
            entry["size"] = (row["width"], row["height"])
        if row.get("split"):
            entry["split"] = canonical_split(row["split"])
        coords = [row.get(c, "") for c in BOX_COLUMNS]
        if not any(coords) and not row.get(label_col):
            continue  # a negative image: listed without a box
        # Text that is not a number stays in the box, so the builder's issue shows it.
        entry["boxes"].append(RawBox(row.get(label_col, ""), number_list(coords) or coords))
    return images


def read(
    path: Path,
    *,
    strict: bool = False,
    classes: list[str] | None = None,
    on_unknown_class: str = "drop",
    allow_outside_root: bool = False,
    **_,
) -> Dataset:
    csv_path = _box_csv(path)
    if csv_path is None:
        raise DataError(f"{path}: not a detection CSV (needs {', '.join(BOX_COLUMNS)} and a path column)")
    header, rows = read_csv(csv_path)
    missing = [c for c in BOX_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"{csv_path}: no {', '.join(missing)} column (has {', '.join(box_columns_in(header))}); "
            f"a detection CSV needs all of {', '.join(BOX_COLUMNS)}"
        )
    path_col, label_col = _column(header, PATH_COLUMNS), _column(header, LABEL_COLUMNS)
    if path_col is None or label_col is None:
        raise DataError(
            f"{csv_path}: needs an image path column ({', '.join(PATH_COLUMNS)}) and a "
            f"label column ({', '.join(LABEL_COLUMNS)})"
        )
    base = csv_path.parent
    search = [base, base / "images", base.parent, base.parent / "images"]
    declared = classes or read_class_file(base / "classes.txt")
    within = Confinement.of(path, allow_outside_root)
    builder = DetectionBuilder("csv_boxes", base, declared, strict, on_unknown_class, within=within)
    for name, entry in _group_by_image(csv_path, rows, path_col, label_col).items():
        builder.add_image(
            resolve_image(name, search, within=within),
            entry["boxes"],
            source=f"{csv_path}:{entry['line']}",
            annotated_size=entry["size"],
            split=entry["split"],
        )
    return builder.build()


def _box_rows(dataset: Dataset, rec, image_ref: str) -> list[list[str]]:
    common = [str(rec.width or ""), str(rec.height or ""), rec.split or ""]
    labelled = list(zip(label_names(dataset, rec), rec.boxes.tolist(), strict=True))
    labelled += [(IGNORE_LABEL, b) for b in rec.ignore.tolist()]
    rows = [[image_ref, *(format_number(v, 2) for v in box), name, *common] for name, box in labelled]
    return rows or [[image_ref, "", "", "", "", "", *common]]


def write(dataset: Dataset, out: Path) -> None:
    require_detection(dataset, "detection CSV")
    single_file = out.suffix.lower() == ".csv"
    csv_path = out if single_file else out / ANNOTATION_FILE
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(WRITE_COLUMNS)
        for rec in dataset.records:
            if single_file:
                ref = os.path.relpath(rec.path.resolve(), csv_path.parent.resolve())
            else:
                ref = place_image(rec.path, out / "images", taken).relative_to(out).as_posix()
            writer.writerows(_box_rows(dataset, rec, Path(ref).as_posix()))
    if not single_file:  # a lone CSV may sit in a folder that is not ours to add files to
        (out / "classes.txt").write_text("".join(f"{c}\n" for c in dataset.classes), encoding="utf-8")


register_format(Format("csv_boxes", sniff, read, write, priority=38, keeps_crowd=False))
