"""Dataset formats: one module per format, all reading into and writing out of :class:`Dataset`.

Each format registers a reader with a ``sniff(path) -> bool`` that recognises its layout, so
``read_dataset(path)`` finds the format by itself. Detection formats are tried before class
folders, because an image folder with annotation files next to it is not a classification set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lanner.data.records import Dataset, ImageRecord, Issue
from lanner.data.remote import local_dataset
from lanner.errors import DataError


@dataclass(frozen=True)
class Format:
    name: str
    sniff: Callable[[Path], bool]
    read: Callable[..., Dataset]
    write: Callable[[Dataset, Path], None] | None = None
    priority: int = 50  # lower is tried first
    # What the written files can express; anything else is dropped with an issue before writing,
    # never written as something it is not (a crowd region is not an ordinary box).
    keeps_crowd: bool = True
    keeps_ignore: bool = True


_FORMATS: dict[str, Format] = {}


def annotation_file(
    path: Path, suffix: str, accepts: Callable[[Path], bool], preferred: str | None = None
) -> Path | None:
    """``path`` when it is an annotation file of a format (``suffix``, and ``accepts`` it), else the
    ``preferred`` such file at the top of the folder ``path``, else its first one; None when none."""
    if path.is_file():
        return path if path.suffix.lower() == suffix and accepts(path) else None
    if not path.is_dir():
        return None
    found = [f for f in sorted(path.glob(f"*{suffix}")) if accepts(f)]
    return next((f for f in found if f.name == preferred), found[0] if found else None)


def register_format(fmt: Format) -> Format:
    if fmt.name in _FORMATS:
        raise ValueError(f"format {fmt.name!r} is already registered")
    _FORMATS[fmt.name] = fmt
    return fmt


def list_formats() -> list[str]:
    _load_builtin()
    return sorted(_FORMATS)


def get_format(name: str) -> Format:
    _load_builtin()
    try:
        return _FORMATS[name]
    except KeyError:
        raise DataError(f"unknown format {name!r}; known: {', '.join(sorted(_FORMATS))}") from None


def detect_format(path: str | Path) -> str:
    """The name of the first registered format whose sniffer recognises ``path`` (a URL: its local mirror)."""
    _load_builtin()
    path = local_dataset(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    for fmt in sorted(_FORMATS.values(), key=lambda f: f.priority):
        if fmt.sniff(path):
            return fmt.name
    raise DataError(
        f"{path}: cannot tell the dataset format; expected class folders, a CSV, COCO JSON, Pascal VOC, "
        "YOLO, Labelme, CVAT XML, Label Studio JSON or an Open Images CSV "
        f"(or pass --format; known: {', '.join(sorted(_FORMATS))})"
    )


def read_dataset(
    path: str | Path,
    format: str | None = None,
    *,
    strict: bool = False,
    allow_outside_root: bool = False,
    **kwargs,
) -> Dataset:
    """Read any supported layout into a :class:`Dataset`, validating as it reads.

    Files named inside annotations must lie inside the dataset root (see :mod:`lanner.data.paths`)
    unless ``allow_outside_root``; ``strict`` turns every problem into a :class:`DataError`.
    Other keywords (``classes=``, ``on_unknown_class=``) go to the reader. A URL (``https://``,
    ``s3://``, ...) is read from its local mirror (:mod:`lanner.data.remote`).
    """
    path = local_dataset(path)
    name = format or detect_format(path)
    return get_format(name).read(path, strict=strict, allow_outside_root=allow_outside_root, **kwargs)


def write_dataset(dataset: Dataset, format: str, out: str | Path) -> Path:
    """Write ``dataset`` as ``format`` into ``out``.

    Crowd boxes and ignore regions the format cannot hold are left out, and each loss is appended
    to ``dataset.issues`` (action ``dropped``, kind ``lost``) so the caller can report it.
    """
    fmt = get_format(format)
    if fmt.write is None:
        raise DataError(f"format {format!r} cannot be written")
    out = Path(out)
    writable, lost = _writable(dataset, fmt)
    fmt.write(writable, out)
    dataset.issues.extend(lost)
    return out


def _writable(dataset: Dataset, fmt: Format) -> tuple[Dataset, list[Issue]]:
    """``dataset`` without what ``fmt`` cannot express, and an issue per image that lost something."""
    if dataset.task != "detect" or (fmt.keeps_crowd and fmt.keeps_ignore):
        return dataset, []
    records, lost = [], []
    for rec in dataset.records:
        crowd = rec.iscrowd.astype(bool) if not fmt.keeps_crowd else np.zeros(rec.num_boxes, dtype=bool)
        ignored = 0 if fmt.keeps_ignore else len(rec.ignore)
        if crowd.any() or ignored:
            lost.append(_loss(rec, fmt.name, int(crowd.sum()), ignored))
            rec = replace(
                rec,
                boxes=rec.boxes[~crowd],
                labels=rec.labels[~crowd],
                iscrowd=rec.iscrowd[~crowd],
                scores=None if rec.scores is None else rec.scores[~crowd],
                notes=None
                if rec.notes is None
                else [n for n, c in zip(rec.notes, crowd, strict=True) if not c],
                ignore=rec.ignore if fmt.keeps_ignore else rec.ignore[:0],
            )
        records.append(rec)
    return replace(dataset, records=records, issues=[]), lost


def _loss(rec: ImageRecord, format: str, crowd: int, ignored: int) -> Issue:
    parts = [f"{n} {what}" for n, what in ((crowd, "crowd box(es)"), (ignored, "ignore region(s)")) if n]
    problem = (
        f"{' and '.join(parts)} not written: {format} cannot hold them (never written as ordinary boxes)"
    )
    return Issue(str(rec.path), problem, action="dropped", kind="lost")


_loaded = False


def _load_builtin() -> None:
    """Import the built-in format modules once; each registers itself on import."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for mod in (
        "folder", "csv", "csv_boxes", "coco", "voc", "yolo", "labelme",
        "cvat", "label_studio", "open_images", "coco_results",
    ):  # fmt: skip
        try:
            importlib.import_module(f"lanner.data.formats.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"lanner.data.formats.{mod}":
                raise
