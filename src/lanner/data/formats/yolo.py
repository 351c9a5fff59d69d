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
``classes.txt``; coordinates with 6 decimals, as Ultralytics writes them. Crowd boxes and ignore
regions have no YOLO form: ``write_dataset`` leaves them out and reports each loss as an issue.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lanner.data.formats import Format, register_format
from lanner.data.images import image_size, is_image_file
from lanner.data.paths import Confinement, is_dir, is_file
from lanner.data.records import SPLIT_ALIASES, Dataset, canonical_split
from lanner.data.validate import (
    DetectionBuilder,
    RawBox,
    bounding_box,
    integer_id,
    number_list,
    place_image,
    read_class_file,
    read_text,
    require_detection,
    short_repr,
    text_value,
)
from lanner.errors import DataError

YAML_SPLIT_KEYS = ("train", "val", "test")


def _yaml_file(path: Path) -> Path | None:
    """The Ultralytics dataset yaml: ``path`` itself or one at its top level that has ``names``."""
    if path.is_file():
        return path if path.suffix.lower() in (".yaml", ".yml") else None
    for f in sorted(path.glob("*.y*ml")):
        if f.is_file() and "names" in f.read_text(encoding="utf-8", errors="replace"):
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


def _images_of(entry: Path, builder: DetectionBuilder, source: Path) -> list[Path]:
    """The images an entry of data.yaml names: a folder, a ``.txt`` list of images, or one image."""
    if not builder.admit(entry, source):
        return []
    if is_file(entry) and entry.suffix.lower() == ".txt":  # a list of image paths, one a line
        lines = [ln.strip() for ln in read_text(entry).splitlines() if ln.strip()]
        listed = [entry.parent / p for p in map(Path, lines)]  # an absolute line replaces the folder
        return [image for image in listed if builder.admit(image, entry)]
    if is_dir(entry):
        return sorted(p for p in entry.rglob("*") if p.is_file() and is_image_file(p))
    return [entry]  # a missing folder or file: reported as a missing image


def _names_from_yaml(names, yaml_path: Path) -> list[str]:
    if isinstance(names, dict):
        ids = {integer_id(k): v for k, v in names.items()}
        if None in ids or sorted(ids) != list(range(len(ids))):
            raise DataError(f"{yaml_path}: 'names' ids {sorted(map(str, names))} must be 0..{len(ids) - 1}")
        names = [ids[i] for i in range(len(ids))]
    if isinstance(names, list) and all(text_value(n) is not None for n in names):
        return [text_value(n) for n in names]
    raise DataError(f"{yaml_path}: 'names' must be a list of class names or an {{id: name}} mapping")


def _load_yaml(yaml_path: Path) -> dict:
    try:
        cfg = yaml.safe_load(read_text(yaml_path))
    except yaml.YAMLError as e:
        raise DataError(f"{yaml_path}: unreadable YAML ({e})") from e
    if not isinstance(cfg, dict):
        raise DataError(f"{yaml_path}: a dataset yaml must be a mapping with 'names', 'train' and 'val'")
    if "names" not in cfg:
        raise DataError(f"{yaml_path}: no 'names' key (the class names)")
    return cfg


def _yaml_base(cfg: dict, yaml_path: Path, builder: DetectionBuilder) -> Path:
    """The folder ``train``/``val``/``test`` are relative to: ``path:``, else the yaml's folder."""
    given = cfg.get("path")
    if given is not None and not isinstance(given, str):
        raise DataError(f"{yaml_path}: 'path' must be a folder name, not {short_repr(given)}")
    base = Path(given or ".")
    base = base if base.is_absolute() else yaml_path.parent / base
    if not is_dir(base):
        # Ultralytics users often leave their own machine's absolute path: use the yaml's folder.
        return yaml_path.parent
    if not builder.admit(base, yaml_path):
        return yaml_path.parent  # refused and noted; what the yaml's own folder holds still counts
    return base


def _yaml_entries(cfg: dict, key: str, yaml_path: Path) -> list[str]:
    entries = cfg.get(key)
    entries = [entries] if isinstance(entries, str) else entries or []
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise DataError(f"{yaml_path}: {key!r} must be a folder, a .txt list of images, or a list of them")
    return entries


def _from_yaml(
    yaml_path: Path, builder: DetectionBuilder
) -> tuple[list[str], list[tuple[str | None, list[Path]]]]:
    cfg = _load_yaml(yaml_path)
    names = _names_from_yaml(cfg["names"], yaml_path)
    base = _yaml_base(cfg, yaml_path, builder)
    groups, listed = [], {}
    for key in YAML_SPLIT_KEYS:
        for entry in _yaml_entries(cfg, key, yaml_path):
            # train and val often name the same entry: read (and report its problems) once.
            if entry not in listed:
                listed[entry] = _images_of(base / entry, builder, yaml_path)
            groups.append((canonical_split(key), listed[entry]))
    if len(groups) > 1 and all(images == groups[0][1] for _, images in groups):
        # train and val naming the same images (Ultralytics requires both keys) means "no split".
        groups = [(None, groups[0][1])]
    return names, groups


def _parse_line(line: str, names: list[str], width: int, height: int) -> RawBox | str:
    """A box in pixels, or a string saying what is wrong with the line."""
    fields = line.split()
    cls, values = integer_id(fields[0]), number_list(fields[1:])
    if cls is None or cls < 0:
        return f"line {line!r}: class {fields[0]!r} is not a class index (a whole number >= 0)"
    if values is None:
        return f"line {line!r} is not numbers"
    name = names[cls] if cls < len(names) else f"<class id {cls}>"
    if len(values) == 4:
        cx, cy, w, h = values
        xyxy = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
        return RawBox(name, xyxy)
    if len(values) >= 6 and len(values) % 2 == 0:
        pts = [(x * width, y * height) for x, y in zip(values[::2], values[1::2], strict=True)]
        return RawBox(name, bounding_box(pts))
    return f"line {line!r} has {len(values)} values after the class; expected 4 (or a polygon)"


def _label_file_lines(labels: Path, builder: DetectionBuilder) -> list[str] | None:
    """Lines of the label file ([] when there is none: a negative); None when it cannot be used."""
    if not is_file(labels):
        return []
    if not builder.admit(labels, labels):
        return None
    try:
        return read_text(labels).splitlines()
    except DataError as e:
        builder.note(labels, str(e).split(": ", 1)[-1], "skipped", "malformed")
        return None


def _read_labels(image: Path, names: list[str], builder: DetectionBuilder, split: str | None) -> None:
    labels = label_path(image)
    if not builder.admit(image, labels if is_file(labels) else image):
        return
    lines = _label_file_lines(labels, builder)
    if lines is None:
        return
    try:
        width, height = image_size(image)
    except DataError:
        width = height = 0  # the builder reports the unreadable image and skips it
    boxes = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parsed = _parse_line(line, names, width, height)
        if isinstance(parsed, str):
            builder.note(f"{labels}:{n}", parsed, "dropped", "box")
        else:
            boxes.append(parsed)
    builder.add_image(image, boxes, source=labels if is_file(labels) else image, split=split)


def read(
    path: Path,
    *,
    strict: bool = False,
    classes: list[str] | None = None,
    on_unknown_class: str = "drop",
    allow_outside_root: bool = False,
    **_,
) -> Dataset:
    yaml_path = _yaml_file(path)
    root = path if path.is_dir() else path.parent
    builder = DetectionBuilder(
        "yolo", root, None, strict, on_unknown_class, within=Confinement.of(path, allow_outside_root)
    )
    if yaml_path is not None:
        names, groups = _from_yaml(yaml_path, builder)
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
        groups = [(split, _images_of(images, builder, path)) for split, images in pairs]
    # Ids in the txt files index the file's own names; ``classes=`` only filters which to keep.
    builder.set_classes(classes or names)
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


register_format(Format("yolo", sniff, read, write, priority=30, keeps_crowd=False, keeps_ignore=False))
