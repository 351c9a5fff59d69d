"""Class-per-folder classification sets: ``root/<class>/*.jpg`` or ``root/<split>/<class>/*.jpg``.

Nested folders below a class folder belong to that class. Split folders (train/val/test and their
usual spellings) are recognised by name. Images (or class folders) that are symlinks leading out of
the dataset folder are refused with an issue (:mod:`lanner.data.paths`).
"""

from __future__ import annotations

from pathlib import Path

from lanner.data.formats import Format, register_format
from lanner.data.images import is_image_file
from lanner.data.paths import Confinement
from lanner.data.records import SPLIT_ALIASES, Dataset, ImageRecord, Issue, canonical_split
from lanner.errors import DataError


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))


def _split_dirs(root: Path) -> list[Path]:
    dirs = _subdirs(root)
    split_dirs = [d for d in dirs if d.name.lower() in SPLIT_ALIASES]
    # A split layout only counts when every split folder holds class folders.
    if split_dirs and all(_subdirs(d) for d in split_dirs):
        return split_dirs
    return []


def sniff(path: Path) -> bool:
    if not path.is_dir():
        return False
    # Annotation files at the top level mean a detection layout, not class folders.
    if any(p.suffix.lower() in (".json", ".xml") for p in path.iterdir() if p.is_file()):
        return False
    roots = _split_dirs(path) or [path]
    for root in roots:
        classes = _subdirs(root)
        if classes and any(any(is_image_file(p) for p in c.rglob("*")) for c in classes):
            return True
    return False


def read(path: Path, *, allow_outside_root: bool = False, strict: bool = False, **_) -> Dataset:
    split_dirs = _split_dirs(path)
    groups = [(canonical_split(d.name), d) for d in split_dirs] or [(None, path)]
    classes = sorted({c.name for _, root in groups for c in _subdirs(root)})
    if not classes:
        raise DataError(f"{path}: no class folders found (expected {path}/<class>/<images>)")
    index = {name: i for i, name in enumerate(classes)}
    within, records, issues = Confinement.of(path, allow_outside_root), [], []
    for split, root in groups:
        for class_dir in _subdirs(root):
            for img in _images_under(class_dir):
                if within.contains(img):  # a symlinked image or class folder may lead elsewhere
                    records.append(ImageRecord(path=img, label=index[class_dir.name], split=split))
                else:
                    issues.append(Issue(str(img), within.refusal(img), "skipped", "outside_root"))
    if strict and issues:
        raise DataError(f"{path}: {len(issues)} problem(s):\n  " + "\n  ".join(map(str, issues)))
    if not records:
        raise DataError(f"{path}: class folders hold no image files")
    return Dataset(classes, records, task="classify", root=path, format="folder", issues=issues)


def write(dataset: Dataset, out: Path) -> None:
    """Copy (hard-link where possible) images into ``out/[split/]<class>/``."""
    import os
    import shutil

    if dataset.task != "classify":
        raise DataError("class folders hold classification data only")
    for i, rec in enumerate(dataset.records):
        if rec.label is None:
            continue
        dest_dir = out / (rec.split or "") / dataset.classes[rec.label]
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / f"{i:06d}_{rec.path.name}"
        try:
            os.link(rec.path, dest)
        except OSError:
            shutil.copy2(rec.path, dest)


register_format(Format("folder", sniff, read, write, priority=90))
