"""Labelme JSON: one ``<image>.json`` next to each image.

Every shape with points becomes a box: rectangles directly (in whatever corner order they were
dragged), polygons, lines and masks as the bounding box of their points, circles as the box
around centre and radius. Shapes labelled ``__ignore__`` become ignore regions; ``_background_``
is never a class. ``imagePath`` is relative to the JSON and must lie inside the dataset root
(:mod:`lanner.data.paths`); when it does not name an image file
(labelme's tutorial points it at the JSON itself) an image with the JSON's stem is used, and
failing that the inline ``imageData`` is written once to a cache folder. A ``labels.txt`` at the
root (labelme's ``--labels`` file) fixes the class list. Splits come from folder names.

Classification (labelme's own convention, ``labelme DIR --flags flags.txt``): when no file has a
shape and image-level ``flags`` are set, each image's class is its one flag that is true; a
``flags.txt`` at the root fixes the class list (else the flags true somewhere). Flags whose name
starts with ``__`` (``__ignore__``) are not classes; a flag not in ``flags.txt`` that is false is a
remark (``lanner review --export`` marks its suggestions so) and is passed over.

Writing: ``out/[split/]<image>`` with ``<stem>.json`` beside it (``imageData: null``, rectangles)
and labelme's ``labels.txt``; a classification set as flags and ``flags.txt``. A record's ``notes``
go into its shapes' ``description`` (classification: as extra flags, false). Coordinates are
written to 2 decimals.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import tempfile
from pathlib import Path

from lanner.data.formats import Format, register_format
from lanner.data.paths import Confinement
from lanner.data.records import Dataset, ImageRecord
from lanner.data.validate import (
    BACKGROUND_LABEL,
    IGNORE_LABEL,
    DetectionBuilder,
    RawBox,
    bounding_box,
    label_names,
    load_json,
    number_list,
    place_image,
    read_class_file,
    resolve_image,
    short_repr,
    split_from_path,
    text_value,
)
from lanner.errors import DataError

LABELME_VERSION = "5.5.0"
MAX_SNIFF_FILES = 50  # JSON files opened at most when sniffing a folder
FLAGS_FILE = "flags.txt"  # labelme --flags: the image-level flags (classes) of a classification set


def _load_labelme(path: Path) -> dict | None:
    """The parsed JSON when it is a labelme file, else None (COCO or other JSON living nearby)."""
    try:
        data = load_json(path, "Labelme")
    except DataError:
        return None
    if isinstance(data, dict) and "shapes" in data and "imagePath" in data:
        return data
    return None


def _labelme_or_issue(path: Path, builder: DetectionBuilder) -> dict | None:
    """A labelme file's data; other JSON is passed over, broken labelme files become issues.

    A JSON object with ``shapes`` is a labelme file (COCO and other JSON found in the same folders
    has none); one that cannot be parsed at all is reported, since it may well be a labelme file.
    """
    try:
        data = load_json(path, "Labelme")
    except DataError as e:
        builder.note(path, str(e).split(": ", 1)[-1], "skipped", "malformed")
        return None
    if not isinstance(data, dict):
        problem = f"top level is a JSON {type(data).__name__}, not an object (neither Labelme nor COCO)"
        builder.note(path, problem, "skipped", "malformed")
        return None
    if "shapes" not in data:
        return None
    if text_value(data.get("imagePath")) is None and not data.get("imageData"):
        builder.note(
            path, "no 'imagePath' (and no inline 'imageData'): no image to use", "skipped", "malformed"
        )
        return None
    if not isinstance(data["shapes"], list):
        builder.note(path, f"'shapes' is not a list: {short_repr(data['shapes'])}", "skipped", "malformed")
        return None
    return data


def _json_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix.lower() == ".json" else []
    return sorted(p for p in path.rglob("*.json") if not p.name.startswith("."))


def sniff(path: Path) -> bool:
    if not path.exists():
        return False
    return any(_load_labelme(f) is not None for f in _json_files(path)[:MAX_SNIFF_FILES])


def _shape_box(shape: dict) -> tuple[float, float, float, float] | None:
    points = shape.get("points") or []
    flat = number_list([v for p in points for v in p]) if _is_point_list(points) else None
    if flat is None:
        return None
    if shape.get("shape_type") == "circle" and len(flat) == 4:
        cx, cy, px, py = flat
        r = math.hypot(px - cx, py - cy)
        return cx - r, cy - r, cx + r, cy + r
    return bounding_box(zip(flat[::2], flat[1::2], strict=True))


def _is_point_list(points) -> bool:
    return isinstance(points, list) and all(isinstance(p, list) and len(p) == 2 for p in points)


def _boxes(data: dict, path: Path, builder: DetectionBuilder) -> list[RawBox]:
    boxes = []
    for index, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict):
            builder.note(
                path, f"shapes[{index}] is not an object: {short_repr(shape)}", "dropped", "malformed"
            )
            continue
        label = text_value(shape.get("label")) or ""
        if not shape.get("points"):
            # A shape without points has no extent: the builder drops it as degenerate.
            boxes.append(RawBox(label, (0.0, 0.0, 0.0, 0.0)))
            continue
        box = _shape_box(shape)
        boxes.append(RawBox(label, box if box is not None else [shape.get("points")]))
    return boxes


def _inline_image(data: dict, json_path: Path) -> Path | None:
    """Write the base64 ``imageData`` once to a cache file named by its hash (no pixel decoding)."""
    if not isinstance(data.get("imageData"), str) or not data["imageData"]:
        return None
    try:
        raw = base64.b64decode(data["imageData"])
    except ValueError:
        return None
    cache = Path(tempfile.gettempdir()) / "lanner-labelme-images"
    cache.mkdir(parents=True, exist_ok=True)
    suffix = ".png" if raw.startswith(b"\x89PNG") else ".jpg"
    target = cache / f"{json_path.stem}-{hashlib.sha1(raw).hexdigest()[:12]}{suffix}"
    if not target.is_file():
        target.write_bytes(raw)
    return target


def _image_for(data: dict, json_path: Path, within: Confinement) -> tuple[Path | None, bool]:
    """The image file and whether it was decoded from the inline ``imageData``."""
    image_path = text_value(data.get("imagePath"))
    image = resolve_image(image_path, [json_path.parent], within=within) if image_path else None
    if image is None or image.suffix.lower() == ".json":
        image = resolve_image(json_path.stem, [json_path.parent], stem_fallback=True, within=within)
    if image is not None:
        return image, False
    inline = _inline_image(data, json_path)
    return inline, inline is not None


def read(
    path: Path,
    *,
    strict: bool = False,
    classes: list[str] | None = None,
    on_unknown_class: str = "drop",
    allow_outside_root: bool = False,
    **_,
) -> Dataset:
    root = path if path.is_dir() else path.parent
    within = Confinement.of(path, allow_outside_root)
    declared = classes or read_class_file(root / "labels.txt")
    builder = DetectionBuilder("labelme", root, declared, strict, on_unknown_class, within=within)
    files = [
        (json_path, data)
        for json_path in _json_files(path)
        if builder.admit(json_path, json_path) and (data := _labelme_or_issue(json_path, builder)) is not None
    ]
    if not files:
        why = f"; {builder.issues[0]}" if builder.issues else ""
        raise DataError(f"{path}: no usable Labelme JSON files (with 'shapes' and 'imagePath'){why}")
    if _is_classification(files):
        return _read_flags(files, root, classes or read_class_file(root / FLAGS_FILE), builder, strict)
    for json_path, data in files:
        image, inline = _image_for(data, json_path, within)
        builder.add_image(
            image,
            _boxes(data, json_path, builder),
            source=json_path,
            annotated_size=(data.get("imageWidth"), data.get("imageHeight")),
            split=split_from_path(json_path, root),
            inline=inline,
        )
    return builder.build()


# ------------------------------------------------------------------------------------ classification
def _class_flags(data: dict) -> dict[str, bool]:
    """The image-level flags that may be classes (labelme's ``__ignore__`` and the like are not)."""
    flags = data.get("flags")
    if not isinstance(flags, dict):
        return {}
    return {str(k): v is True for k, v in flags.items() if not str(k).startswith("__")}


def _is_classification(files: list[tuple[Path, dict]]) -> bool:
    """Labelme's classification layout: no shapes anywhere, and image-level flags set."""
    no_shapes = not any(data["shapes"] for _, data in files)
    return no_shapes and any(any(_class_flags(data).values()) for _, data in files)


def _read_flags(files, root: Path, declared: list[str] | None, builder: DetectionBuilder, strict: bool):
    """A classification Dataset: each image's class is its one true flag (declared classes only)."""
    names = [n for n in declared or [] if not n.startswith("__")]  # flags.txt lists __ignore__ too
    names = names or sorted({k for _, d in files for k, on in _class_flags(d).items() if on})
    index, records = {name: i for i, name in enumerate(names)}, []
    for json_path, data in files:
        chosen = [k for k, on in _class_flags(data).items() if on and k in index]
        image, _ = _image_for(data, json_path, builder.within)
        if image is None or len(chosen) != 1:
            why = "no image file found" if image is None else f"{len(chosen)} class flags set, not one"
            builder.note(json_path, f"{why} ({', '.join(chosen) or 'none'})", "skipped", "label")
            continue
        records.append(ImageRecord(image, label=index[chosen[0]], split=split_from_path(json_path, root)))
    if strict and builder.issues:
        raise DataError(
            f"{root}: {len(builder.issues)} problem(s):\n  " + "\n  ".join(map(str, builder.issues))
        )
    if not records:
        raise DataError(f"{root}: no Labelme file has exactly one class flag set")
    return Dataset(names, records, "classify", root, "labelme", builder.issues)


def _rectangle(label: str, box: list[float], description: str = "") -> dict:
    x1, y1, x2, y2 = (round(v, 2) for v in box)
    return {
        "label": label,
        "points": [[x1, y1], [x2, y2]],
        "group_id": None,
        "description": description,
        "shape_type": "rectangle",
        "flags": {},
    }


def _labelme_json(dataset: Dataset, rec, image: Path) -> dict:
    flags, notes = {}, rec.notes or []
    if dataset.task == "classify":  # labelme's classification: one flag per class, the image's set
        flags = {c: i == rec.label for i, c in enumerate(dataset.classes)} | dict.fromkeys(notes, False)
        notes = []
    named = zip(label_names(dataset, rec), rec.boxes.tolist(), notes or [""] * rec.num_boxes, strict=True)
    shapes = [_rectangle(n, b, note) for n, b, note in named]
    shapes += [_rectangle(IGNORE_LABEL, b) for b in rec.ignore.tolist()]
    return {
        "version": LABELME_VERSION,
        "flags": flags,
        "shapes": shapes,
        "imagePath": image.name,
        "imageData": None,
        "imageHeight": rec.height,
        "imageWidth": rec.width,
    }


def write(dataset: Dataset, out: Path) -> None:
    taken: dict[str | None, set[str]] = {}
    for rec in dataset.records:
        folder = out / rec.split if rec.split else out
        image = place_image(rec.path, folder, taken.setdefault(rec.split, set()))
        data = _labelme_json(dataset, rec, image)
        (folder / f"{image.stem}.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    # labelme's --labels / --flags file lists the special labels first; lanner skips them when reading.
    special = [IGNORE_LABEL] if dataset.task == "classify" else [IGNORE_LABEL, BACKGROUND_LABEL]
    name = FLAGS_FILE if dataset.task == "classify" else "labels.txt"
    (out / name).write_text("".join(f"{c}\n" for c in [*special, *dataset.classes]), encoding="utf-8")


register_format(Format("labelme", sniff, read, write, priority=35, keeps_crowd=False))
