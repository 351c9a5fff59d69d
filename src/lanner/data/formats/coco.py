"""COCO detection JSON: one file, or a folder with one JSON per split (Roboflow's export).

Layouts read: ``annotations.json`` given directly; a folder holding COCO JSON files; a folder of
split folders each holding one (``train/_annotations.coco.json``, ``valid/...``); and the
official ``annotations/instances_<split>.json``. ``file_name`` is resolved against the JSON's
folder (then its parent, and ``images/`` in either), and must lie inside the dataset root
(:mod:`lanner.data.paths`). Malformed entries (a bbox that is not 4 numbers, a category without
``id`` or ``name``, an annotation whose ``image_id`` names no image) are reported and dropped;
a file without a ``categories`` list is a :class:`DataError`.

Category ids are remapped to contiguous class indices 0..C-1 in id order. A category with no
annotations that is only a placeholder (the supercategory of other categories, like Roboflow's
category 0, or labelme's ``_background_``) is removed and noted. ``iscrowd=1`` annotations are
kept with ``iscrowd=True``. Ignore regions have no COCO form and are not written.
"""

from __future__ import annotations

import json
from pathlib import Path

from lanner.data.formats import Format, register_format
from lanner.data.paths import Confinement
from lanner.data.records import SPLIT_ALIASES, Dataset, canonical_split
from lanner.data.validate import (
    BACKGROUND_LABEL,
    DetectionBuilder,
    RawBox,
    dict_entries,
    finite_number,
    integer_id,
    load_json,
    number_list,
    place_image,
    require_detection,
    resolve_image,
    short_repr,
    text_value,
)
from lanner.errors import DataError

ANNOTATION_FILE = "_annotations.coco.json"  # Roboflow's name; what the writer uses too


def _looks_like_coco(path: Path) -> bool:
    """Cheap check on the start of the file, so sniffing a big JSON does not parse it."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with path.open(encoding="utf-8", errors="replace") as f:
        head = f.read(1 << 16)
    return '"images"' in head and ('"categories"' in head or '"annotations"' in head)


def _coco_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if _looks_like_coco(path) else []
    if not path.is_dir():
        return []
    folders = [path, path / "annotations"]
    folders += [d for d in sorted(path.iterdir()) if d.is_dir() and d.name.lower() in SPLIT_ALIASES]
    return [f for d in folders if d.is_dir() for f in sorted(d.glob("*.json")) if _looks_like_coco(f)]


def sniff(path: Path) -> bool:
    return bool(_coco_files(path))


def _split_of(json_path: Path) -> str | None:
    """Split from the JSON's folder (Roboflow ``valid/``) or its name (``instances_val2017.json``)."""
    if json_path.parent.name.lower() in SPLIT_ALIASES:
        return canonical_split(json_path.parent.name)
    stem = json_path.stem.lower().replace("instances_", "").rstrip("0123456789")
    return canonical_split(stem) if stem in SPLIT_ALIASES else None


def _load(path: Path) -> dict:
    data = load_json(path, "COCO")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not COCO JSON (no 'images' list)")
    if not isinstance(data.get("categories"), list):
        raise DataError(
            f"{path}: no 'categories' list; COCO JSON must declare its categories "
            '(e.g. "categories": [{"id": 1, "name": "cat"}])'
        )
    if dict_entries(data, "annotations") is None:
        raise DataError(f"{path}: 'annotations' must be a list")
    return data


def _objects(
    path: Path, data: dict, key: str, builder: DetectionBuilder, action: str
) -> list[tuple[int, dict]]:
    """(index, entry) of ``data[key]`` that are JSON objects; every other entry becomes an issue."""
    entries = []
    for index, entry in enumerate(data.get(key, [])):
        if isinstance(entry, dict):
            entries.append((index, entry))
        else:
            builder.note(path, f"{key}[{index}] is not an object: {short_repr(entry)}", action, "malformed")
    return entries


def _entry_key(value) -> int | str | None:
    """An image id as a dict key: whole numbers as ints (``"3"`` and ``3.0`` are image 3), else text."""
    found = integer_id(value)
    return found if found is not None else text_value(value)


def _checked_categories(
    path: Path, data: dict, builder: DetectionBuilder
) -> list[tuple[int, str, str | None]]:
    """(id, name, supercategory) of each category with a whole-number id and a name, by id."""
    found: dict[int, tuple[int, str, str | None]] = {}
    for index, cat in _objects(path, data, "categories", builder, "dropped"):
        cat_id, name = integer_id(cat.get("id")), text_value(cat.get("name"))
        if cat_id is None or name is None or cat_id in found:
            what = "a duplicate 'id'" if cat_id in found else "no usable 'id' and 'name'"
            problem = f"categories[{index}] {short_repr(cat)} has {what}; its annotations are dropped"
            builder.note(path, problem, "dropped", "malformed")
            continue
        found[cat_id] = (cat_id, name, text_value(cat.get("supercategory")))
    return [found[k] for k in sorted(found)]


def _placeholder_ids(cats: list[tuple[int, str, str | None]], annotations: list[dict]) -> dict[int, str]:
    """Categories without annotations that only group others (or are background), with the reason."""
    used = {integer_id(a.get("category_id")) for a in annotations}
    parents = {parent for _, _, parent in cats}
    found = {}
    for cat_id, name, _ in cats:
        if cat_id in used:
            continue
        if name == BACKGROUND_LABEL:
            found[cat_id] = "is the background, not a class"
        elif name in parents:
            found[cat_id] = "is the supercategory of other categories: a placeholder, not a class"
    return found


def _file_categories(path: Path, data: dict, builder: DetectionBuilder) -> dict[int, str]:
    """Category id -> class name of one file, placeholders removed (and noted)."""
    cats = _checked_categories(path, data, builder)
    annotations = [a for a in data.get("annotations", []) if isinstance(a, dict)]
    placeholders = _placeholder_ids(cats, annotations)
    id_to_name = {}
    for cat_id, name, _ in cats:
        if cat_id in placeholders:
            problem = f"category {cat_id} {name!r} has no annotations and {placeholders[cat_id]}; removed"
            builder.note(path, problem, "dropped", "category")
        else:
            id_to_name[cat_id] = name
    kept_ids = list(id_to_name)
    # Ids 0..C-1 or 1..C map onto class indices trivially; gaps or odd orders are worth a note.
    if kept_ids and kept_ids != list(range(kept_ids[0], kept_ids[0] + len(kept_ids))):
        problem = f"category ids {kept_ids} are not contiguous; remapped to 0..{len(kept_ids) - 1}"
        builder.note(path, problem, "fixed", "category")
    return id_to_name


def _categories(files: list[tuple[Path, dict]], builder: DetectionBuilder) -> dict[Path, dict[int, str]]:
    """Per file, category id -> class name; placeholders removed, class order by id then file."""
    per_file = {path: _file_categories(path, data, builder) for path, data in files}
    names: list[str] = []
    for id_to_name in per_file.values():
        names += [n for n in id_to_name.values() if n not in names]
    if builder.classes is None:
        builder.classes = names
    return per_file


def _crowd_flag(value) -> bool:
    return value is True or finite_number(value) == 1


def _raw_box(ann: dict, id_to_name: dict[int, str]) -> RawBox:
    raw_id = ann.get("category_id")
    name = id_to_name.get(integer_id(raw_id), f"<category id {short_repr(raw_id)}>")
    bbox = ann.get("bbox")
    values = number_list(bbox)
    if values is None or len(values) < 4:
        return RawBox(
            name, bbox if isinstance(bbox, (list, tuple)) else [bbox], _crowd_flag(ann.get("iscrowd"))
        )
    x, y, w, h = values[:4]
    return RawBox(name, (x, y, x + w, y + h), _crowd_flag(ann.get("iscrowd")))


def _annotations_by_image(
    path: Path, data: dict, image_keys: set, builder: DetectionBuilder
) -> dict[int | str, list[dict]]:
    """Annotations grouped by image id; those pointing at no listed image are reported and dropped."""
    by_image: dict[int | str, list[dict]] = {}
    for index, ann in _objects(path, data, "annotations", builder, "dropped"):
        key = _entry_key(ann.get("image_id"))
        if key is None or key not in image_keys:
            problem = (
                f"annotation {short_repr(ann.get('id', index))} refers to image_id "
                f"{short_repr(ann.get('image_id'))}, which is not in 'images'"
            )
            builder.note(path, problem, "dropped", "box")
            continue
        by_image.setdefault(key, []).append(ann)
    return by_image


def _read_file(path: Path, data: dict, id_to_name: dict[int, str], builder: DetectionBuilder) -> None:
    images = _objects(path, data, "images", builder, "skipped")
    by_image = _annotations_by_image(path, data, {_entry_key(img.get("id")) for _, img in images}, builder)
    base = path.parent
    # Official COCO keeps annotations/instances_val2017.json next to the image folder val2017/.
    official = base.parent / path.stem.replace("instances_", "")
    search = [base, base.parent, base / "images", base.parent / "images", official]
    split = _split_of(path)
    for index, img in images:
        file_name = text_value(img.get("file_name"))
        source = f"{path} (image {file_name or short_repr(img.get('id', index))})"
        if file_name is None:
            builder.note(source, f"images[{index}] has no 'file_name'", "skipped", "malformed")
            continue
        builder.add_image(
            resolve_image(file_name, search, within=builder.within),
            [_raw_box(a, id_to_name) for a in by_image.get(_entry_key(img.get("id")), [])],
            source=source,
            annotated_size=(img.get("width"), img.get("height")),
            split=split,
            image_id=integer_id(img.get("id")),
        )


def read(
    path: Path,
    *,
    strict: bool = False,
    classes: list[str] | None = None,
    on_unknown_class: str = "drop",
    allow_outside_root: bool = False,
    **_,
) -> Dataset:
    files = _coco_files(path)
    if not files:
        raise DataError(f"{path}: no COCO JSON found (expected a file with 'images' and 'categories')")
    loaded = [(f, _load(f)) for f in files]
    builder = DetectionBuilder(
        "coco",
        path if path.is_dir() else path.parent,
        classes,
        strict,
        on_unknown_class,
        within=Confinement.of(path, allow_outside_root),
    )
    categories = _categories(loaded, builder)
    for f, data in loaded:
        _read_file(f, data, categories[f], builder)
    return builder.build()


def _annotation(ann_id: int, image_id: int, box: list[float], label: int, crowd: bool, note: str) -> dict:
    x1, y1, x2, y2 = box
    ann = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": int(label) + 1,
        "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
        "area": round((x2 - x1) * (y2 - y1), 3),
        "iscrowd": int(crowd),
        "segmentation": [],
    }
    if note:  # CVAT's COCO keeps per-annotation "attributes"; other tools pass unknown keys over
        ann["attributes"] = {"note": note}
    return ann


def _coco_dict(dataset: Dataset, records: list, image_paths: list[Path], base: Path) -> dict:
    images, annotations = [], []
    for image_id, (rec, image_path) in enumerate(zip(records, image_paths, strict=True)):
        rel = image_path.relative_to(base) if image_path.is_relative_to(base) else image_path
        images.append({"id": image_id, "file_name": rel.as_posix(), "width": rec.width, "height": rec.height})
        notes = rec.notes or [""] * rec.num_boxes
        for box, label, crowd, note in zip(
            rec.boxes.tolist(), rec.labels.tolist(), rec.iscrowd.tolist(), notes, strict=True
        ):
            annotations.append(_annotation(len(annotations), image_id, box, label, crowd, note))
    # Ids start at 1: COCO tools reserve 0 for the background.
    categories = [{"id": i + 1, "name": n, "supercategory": "none"} for i, n in enumerate(dataset.classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write(dataset: Dataset, out: Path) -> None:
    """A ``.json`` path: one file pointing at the images where they are. A folder: Roboflow layout,
    ``out/<split>/_annotations.coco.json`` with the images copied next to it (``out/`` if no split).
    Coordinates are written to 3 decimals."""
    require_detection(dataset, "COCO")
    if out.suffix.lower() == ".json":
        out.parent.mkdir(parents=True, exist_ok=True)
        data = _coco_dict(
            dataset, dataset.records, [r.path.resolve() for r in dataset.records], out.parent.resolve()
        )
        out.write_text(json.dumps(data), encoding="utf-8")
        return
    groups: dict[str | None, list] = {}
    for rec in dataset.records:
        groups.setdefault(rec.split, []).append(rec)
    for split, records in groups.items():
        folder = out / split if split else out
        taken: set[str] = set()
        copies = [place_image(r.path, folder, taken) for r in records]
        data = _coco_dict(dataset, records, copies, folder)
        (folder / ANNOTATION_FILE).write_text(json.dumps(data), encoding="utf-8")


register_format(Format("coco", sniff, read, write, priority=20, keeps_ignore=False))
