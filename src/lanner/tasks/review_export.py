"""``lanner review --export labelme|coco OUT``: the flagged images, ready to fix in an annotation tool.

OUT gets each image that has a likely label error (hard-linked, else copied) at its path relative to
the dataset's root, so names cannot collide and a fix maps back to its source file, with annotation
files in the chosen format written by lanner's own writers (:mod:`lanner.data.formats`). The labels
are kept as they are; each suggestion is one extra annotation in a class of its own,
``suggested:<class>`` (a box the labels should probably have: a missing box, the right class of a
wrong one, the tighter box of a loose one) or ``suggested:(remove)`` over a box nothing was
predicted near. Its note ("lanner: missing_box score 0.93") is the shape's description in Labelme
and the annotation's ``attributes`` in COCO. Accepting a suggestion is editing the labels to match it;
either way the ``suggested:`` annotation is deleted afterwards. Classification in Labelme uses its
image-level flags (the given class checked, the suggestion an unchecked flag naming it); COCO has no
image-level label, so there each image gets a whole-image box of its class plus one of
``suggested:<class>``. The task's reviewer builds the marked dataset (``reviewer.marked``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from lanner.data.formats import write_dataset
from lanner.data.records import Dataset, ImageRecord
from lanner.data.validate import place_image
from lanner.errors import ConfigError, DataError

FORMATS = ("labelme", "coco")
SUGGESTED = "suggested:"  # the class prefix of a suggestion: never a class of the data itself
REMOVE = "suggested:(remove)"  # over a labelled box the model finds nothing near (spurious_box)
COCO_FILE = "_annotations.coco.json"  # the name lanner's (and Roboflow's) COCO reader looks for


def check_target(format: str, out: str | Path | None, force: bool) -> None:
    """Refuse an unknown format, a missing OUT, or one that holds files (unless ``force``): before the
    run is even loaded."""
    if format not in FORMATS:
        raise ConfigError(f"--export {format!r}: unknown export format; give one of {', '.join(FORMATS)}")
    if out is None:
        raise ConfigError(f"--export {format}: give the output folder, e.g. --export {format} fixes/")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise DataError(f"{out}: exists and is not empty; choose a new folder, or --force to replace it")


def refuse_inside(out: str | Path, protected: list[Path]) -> None:
    """Never OUT at or above a folder in ``protected`` (the data, the run), even with --force: it is
    replaced as a whole."""
    out = Path(out).resolve()
    for folder in protected:
        if folder.resolve().is_relative_to(out):
            raise DataError(f"{out}: holds {folder}; the export must go to a folder of its own")


def note(row: dict) -> str:
    """The remark a suggestion carries: what kind of error, how likely, what the label says now."""
    given = f", labelled {row['given']}" if row.get("given") else ""
    return f"lanner: {row['kind']} score {row['score']:.3f}{given}"


def by_image(rows: list[dict]) -> dict[str, list[dict]]:
    """label_issues.csv rows grouped by image path, most likely image first."""
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["path"], []).append(row)
    return grouped


def export_issues(dataset: Dataset, rows: list[dict], reviewer, format: str, out: str | Path) -> dict:
    """Write the images of ``rows`` (label_issues.csv) in ``dataset`` with their labels and the marked
    suggestions into ``out`` as ``format``; replaces ``out`` in one rename. Returns what was written."""
    grouped, out = by_image(rows), Path(out)
    if not grouped:  # nothing flagged: no folder rather than an empty dataset no reader accepts
        return {"out": str(out), "format": format, "images": 0, "suggestions": 0}
    flagged = [r for r in dataset.records if str(r.path) in grouped]
    if len(flagged) < len(grouped):
        missing = next(p for p in grouped if p not in {str(r.path) for r in flagged})
        raise DataError(f"{missing}: listed in label_issues.csv but not in the reviewed data; review again")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        records = [replace(r, split=_folder_of(r, dataset.root)) for r in flagged]
        marked = reviewer.marked(replace(dataset, records=records, issues=[]), grouped, format)
        _write(marked, format, tmp)
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": str(out), "format": format, "images": len(flagged), "suggestions": len(rows)}


def _folder_of(record: ImageRecord, root: Path | None) -> str | None:
    """The image's folder relative to the data's root (None: at the top, or outside the root). The
    writers place each image under ``out/<split>``: this keeps the relative path."""
    try:
        parent = Path(record.path).resolve().relative_to(Path(root).resolve()).parent
    except (TypeError, ValueError):
        return None
    return parent.as_posix() if parent.parts else None


def _write(dataset: Dataset, format: str, folder: Path) -> None:
    """Labelme writes a JSON beside each image (under ``out/<split>``); COCO's single file needs the
    images placed first, at their relative paths, so that one file names them all."""
    if format == "labelme":
        write_dataset(dataset, format, folder)
        return
    taken: dict[str, set[str]] = {}
    records = []
    for r in dataset.records:
        where = folder / (r.split or "")
        records.append(
            replace(r, path=place_image(r.path, where, taken.setdefault(str(where), set())), split=None)
        )
    write_dataset(replace(dataset, records=records), format, folder / COCO_FILE)


def _move_into_place(tmp: Path, out: Path) -> None:
    """``tmp`` becomes ``out``; an existing ``out`` (empty, or --force) is moved aside first, then removed,
    so an interruption leaves either the old folder or the new one."""
    aside = None
    if out.exists() or out.is_symlink():
        aside = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, aside)
    os.replace(tmp, out)
    if aside is not None:
        shutil.rmtree(aside) if aside.is_dir() and not aside.is_symlink() else aside.unlink()
