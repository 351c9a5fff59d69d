"""YOLO txt labels: one ``<stem>.txt`` per image, a line ``class cx cy w h`` normalised to 0..1.

Layouts read:

* Ultralytics ``data.yaml``: ``path:`` (relative to the yaml's folder; default that folder), and
  ``train``/``val``/``test`` as image folders, lists of them, or ``.txt`` files listing images;
  ``names`` as a list or an ``{id: name}`` dict;
* ``images/`` + ``labels/``, flat or per split (``images/train`` + ``labels/train``), or
  ``train/images`` + ``train/labels``, with class names in ``classes.txt`` (root or labels/).

An image's label file is found the Ultralytics way: the last ``images`` folder in its path
replaced by ``labels``, the suffix by ``.txt``. An image without a label file is a negative.
Segment lines (``class x1 y1 x2 y2 ...``) become the bounding box of the polygon.

Writing: ``images/<split>/``, ``labels/<split>/`` (or flat without splits), ``data.yaml`` and
``classes.txt``; coordinates with 6 decimals, as Ultralytics writes them. Crowd flags and ignore
regions have no YOLO form: crowd boxes are written as ordinary boxes, ignore regions are not written.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lanner.data.formats import Format, register_format
from lanner.data.images import image_size, is_image_file
from lanner.data.records import SPLIT_ALIASES, Dataset, canonical_split
from lanner.data.validate import (
    DetectionBuilder,
    RawBox,
    bounding_box,
    place_image,
    read_class_file,
    require_detection,
)
from lanner.errors import DataError

YAML_SPLIT_KEYS = ("train", "val", "test")


def _yaml_file(path: Path) -> Path | None:
    """The Ultralytics dataset yaml: ``path`` itself or one at its top level that has ``names``."""
    if path.is_file():
        return path if path.suffix.lower() in (".yaml", ".yml") else None
    for f in sorted(path.glob("*.y*ml")):
        if "names" in f.read_text(encoding="utf-8", errors="replace"):
            return f
    return None


def _image_label_pairs(path: Path) -> list[tuple[str | None, Path]]:
    """(split, images folder) pairs of an images/labels layout, without a yaml."""
    pairs: list[tuple[str | None, Path]] = []
    images = path / "images"
    if images.is_dir() and (path / "labels").is_dir():
        split_dirs = [d for d in sorted(images.iterdir()) if d.is_dir() and d.name.lower() in SPLIT_ALIASES]
        pairs += [(canonical_split(d.name), d) for d in split_dirs] or [(None, images)]
    for d in sorted(path.iterdir()) if path.is_dir() else []:
        if d.name.lower() in SPLIT_ALIASES and (d / "images").is_dir() and (d / "labels").is_dir():
            pairs.append((canonical_split(d.name), d / "images"))
    return pairs


def sniff(path: Path) -> bool:
    if path.is_file():
        return _yaml_file(path) is not None
    return path.is_dir() and (_yaml_file(path) is not None or bool(_image_label_pairs(path)))


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder becomes ``labels``, the suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _images_of(entry: Path) -> list[Path]:
    if entry.is_file() and entry.suffix.lower() == ".txt":  # a list of image paths, one a line
        lines = [ln.strip() for ln in entry.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return [p if p.is_absolute() else entry.parent / p for p in map(Path, lines)]
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.is_file() and is_image_file(p))
    return [entry]  # a missing folder or file: reported as a missing image


def _names_from_yaml(names, yaml_path: Path) -> list[str]:
    if isinstance(names, dict):
        ids = sorted(int(k) for k in names)
        if ids != list(range(len(ids))):
            raise DataError(f"{yaml_path}: 'names' ids {ids} must be 0..{len(ids) - 1}")
        return [str(names[k] if k in names else names[str(k)]) for k in ids]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise DataError(f"{yaml_path}: 'names' must be a list or an {{id: name}} mapping")


def _from_yaml(yaml_path: Path) -> tuple[list[str], list[tuple[str | None, list[Path]]]]:
    try:
        cfg = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{yaml_path}: unreadable YAML ({e})") from e
    if "names" not in cfg:
        raise DataError(f"{yaml_path}: no 'names' key (the class names)")
    base = Path(cfg.get("path") or ".")
    base = base if base.is_absolute() else yaml_path.parent / base
    if not base.is_dir():
        # Ultralytics users often leave their own machine's absolute path: use the yaml's folder.
        base = yaml_path.parent
    groups = []
    for key in YAML_SPLIT_KEYS:
        entries = cfg.get(key)
        for entry in [entries] if isinstance(entries, str) else entries or []:
            groups.append((canonical_split(key), _images_of(base / entry)))
    if len(groups) > 1 and all(images == groups[0][1] for _, images in groups):
        # train and val naming the same images (Ultralytics requires both keys) means "no split".
        groups = [(None, groups[0][1])]
    return _names_from_yaml(cfg["names"], yaml_path), groups


def _parse_line(line: str, names: list[str], width: int, height: int) -> RawBox | str:
    """A box in pixels, or a string saying what is wrong with the line."""
    fields = line.split()
    try:
        cls, values = int(float(fields[0])), [float(v) for v in fields[1:]]
    except ValueError:
        return f"line {line!r} is not numbers"
    name = names[cls] if 0 <= cls < len(names) else f"<class id {cls}>"
    if len(values) == 4:
        cx, cy, w, h = values
        xyxy = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
        return RawBox(name, xyxy)
    if len(values) >= 6 and len(values) % 2 == 0:
        pts = [(x * width, y * height) for x, y in zip(values[::2], values[1::2], strict=True)]
        return RawBox(name, bounding_box(pts))
    return f"line {line!r} has {len(values)} values after the class; expected 4 (or a polygon)"


def _read_labels(image: Path, names: list[str], builder: DetectionBuilder, split: str | None) -> None:
    labels = label_path(image)
    try:
        width, height = image_size(image)
    except DataError:
        width = height = 0  # the builder reports the unreadable image and skips it
    boxes = []
    if labels.is_file():
        for n, line in enumerate(labels.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            parsed = _parse_line(line, names, width, height)
            if isinstance(parsed, str):
                builder.note(f"{labels}:{n}", parsed, "dropped", "box")
            else:
                boxes.append(parsed)
    builder.add_image(image, boxes, source=labels if labels.is_file() else image, split=split)


def read(
    path: Path, *, strict: bool = False, classes: list[str] | None = None, on_unknown_class: str = "drop", **_
) -> Dataset:
    yaml_path = _yaml_file(path)
    root = path if path.is_dir() else path.parent
    if yaml_path is not None:
        names, groups = _from_yaml(yaml_path)
    else:
        pairs = _image_label_pairs(path)
        if not pairs:
            raise DataError(f"{path}: no YOLO layout (expected data.yaml, or images/ and labels/ folders)")
        names = read_class_file(root / "classes.txt") or read_class_file(root / "labels" / "classes.txt")
        if names is None and classes is None:
            raise DataError(
                f"{path}: YOLO labels hold class ids only; add classes.txt or a data.yaml "
                "with 'names' (or pass classes=)"
            )
        groups = [(split, _images_of(images)) for split, images in pairs]
    # Ids in the txt files index the file's own names; ``classes=`` only filters which to keep.
    builder = DetectionBuilder("yolo", root, classes or names, strict, on_unknown_class)
    for split, images in groups:
        for image in images:
            _read_labels(image, names or classes, builder, split)
    _note_orphan_labels([image for _, images in groups for image in images], builder)
    return builder.build()


def _note_orphan_labels(images: list[Path], builder: DetectionBuilder) -> None:
    """Label files whose image is missing: their boxes cannot be used, and the user should know."""
    expected = {label_path(image) for image in images}
    for folder in sorted({p.parent for p in expected}):
        for labels in sorted(folder.glob("*.txt")):
            if labels not in expected and labels.name != "classes.txt":
                builder.note(labels, "label file without a matching image", "skipped", "image")


def _label_lines(rec) -> list[str]:
    w, h = float(rec.width), float(rec.height)
    lines = []
    for (x1, y1, x2, y2), cls in zip(rec.boxes.tolist(), rec.labels.tolist(), strict=True):
        values = ((x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)
        lines.append(" ".join([str(int(cls)), *(f"{v:.6f}" for v in values)]))
    return lines


def write(dataset: Dataset, out: Path) -> None:
    require_detection(dataset, "YOLO")
    taken: dict[str | None, set[str]] = {}
    splits: list[str] = []
    for rec in dataset.records:
        if rec.width is None or rec.height is None:
            raise DataError(f"{rec.path}: image size unknown; YOLO needs it to normalise boxes")
        sub = rec.split or ""
        image = place_image(rec.path, out / "images" / sub, taken.setdefault(rec.split, set()))
        labels = out / "labels" / sub / f"{image.stem}.txt"
        labels.parent.mkdir(parents=True, exist_ok=True)
        labels.write_text("".join(f"{ln}\n" for ln in _label_lines(rec)), encoding="utf-8")
        if rec.split and rec.split not in splits:
            splits.append(rec.split)
    # Absolute: Ultralytics resolves a relative ``path`` against its own datasets folder, not the yaml's.
    cfg: dict = {"path": str(out.resolve())}
    if splits:
        order = {s: i for i, s in enumerate(YAML_SPLIT_KEYS)}
        cfg.update({s: f"images/{s}" for s in sorted(splits, key=lambda s: order.get(s, len(order)))})
    else:
        cfg.update({"train": "images", "val": "images"})  # Ultralytics requires both keys
    cfg["names"] = dict(enumerate(dataset.classes))
    (out / "data.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in dataset.classes), encoding="utf-8")


register_format(Format("yolo", sniff, read, write, priority=30))
