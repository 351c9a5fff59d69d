"""COCO detection JSON: one file, or a folder with one JSON per split (Roboflow's export).

Layouts read: ``annotations.json`` given directly; a folder holding COCO JSON files; a folder of
split folders each holding one (``train/_annotations.coco.json``, ``valid/...``); and the
official ``annotations/instances_<split>.json``. ``file_name`` is resolved against the JSON's
folder (then its parent, and ``images/`` in either).

Category ids are remapped to contiguous class indices 0..C-1 in id order. A category with no
annotations that is only a placeholder (the supercategory of other categories, like Roboflow's
category 0, or labelme's ``_background_``) is removed and noted. ``iscrowd=1`` annotations are
kept with ``iscrowd=True``. Ignore regions have no COCO form and are not written.
"""

from __future__ import annotations

import json
from pathlib import Path

from lanner.data.formats import Format, register_format
from lanner.data.records import SPLIT_ALIASES, Dataset, canonical_split
from lanner.data.validate import (
    BACKGROUND_LABEL,
    DetectionBuilder,
    RawBox,
    place_image,
    require_detection,
    resolve_image,
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
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable COCO JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not COCO JSON (no 'images' list)")
    return data


def _placeholder_ids(data: dict) -> dict[int, str]:
    """Categories without annotations that only group others (or are background), with the reason."""
    used = {a.get("category_id") for a in data.get("annotations", [])}
    parents = {c.get("supercategory") for c in data.get("categories", [])}
    found = {}
    for cat in data.get("categories", []):
        if cat["id"] in used:
            continue
        if cat["name"] == BACKGROUND_LABEL:
            found[cat["id"]] = "is the background, not a class"
        elif cat["name"] in parents:
            found[cat["id"]] = "is the supercategory of other categories: a placeholder, not a class"
    return found


def _categories(files: list[tuple[Path, dict]], builder: DetectionBuilder) -> dict[Path, dict[int, str]]:
    """Per file, category id -> class name; placeholders removed, class order by id then file."""
    names: list[str] = []
    per_file = {}
    for path, data in files:
        placeholders = _placeholder_ids(data)
        id_to_name = {}
        cats = sorted(data.get("categories", []), key=lambda c: c["id"])
        for cat in cats:
            if cat["id"] in placeholders:
                builder.note(
                    path,
                    f"category {cat['id']} {cat['name']!r} has no annotations and "
                    f"{placeholders[cat['id']]}; removed",
                    "dropped",
                    "category",
                )
                continue
            id_to_name[cat["id"]] = cat["name"]
            if cat["name"] not in names:
                names.append(cat["name"])
        kept_ids = list(id_to_name)
        # Ids 0..C-1 or 1..C map onto class indices trivially; gaps or odd orders are worth a note.
        if kept_ids and kept_ids != list(range(kept_ids[0], kept_ids[0] + len(kept_ids))):
            builder.note(
                path,
                f"category ids {kept_ids} are not contiguous; remapped to 0..{len(kept_ids) - 1}",
                "fixed",
                "category",
            )
        per_file[path] = id_to_name
    if builder.classes is None:
        builder.classes = names
    return per_file


def _raw_box(ann: dict, id_to_name: dict[int, str]) -> RawBox:
    name = id_to_name.get(ann.get("category_id"), f"<category id {ann.get('category_id')}>")
    bbox = ann.get("bbox") or [float("nan")] * 4
    x, y, w, h = (float(v) for v in bbox[:4]) if len(bbox) >= 4 else [float("nan")] * 4
    return RawBox(name, (x, y, x + w, y + h), bool(ann.get("iscrowd", 0)))


def _read_file(path: Path, data: dict, id_to_name: dict[int, str], builder: DetectionBuilder) -> None:
    by_image: dict[int, list[dict]] = {}
    for ann in data.get("annotations", []):
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    base = path.parent
    # Official COCO keeps annotations/instances_val2017.json next to the image folder val2017/.
    official = base.parent / path.stem.replace("instances_", "")
    search = [base, base.parent, base / "images", base.parent / "images", official]
    split = _split_of(path)
    for img in data["images"]:
        file_name = str(img.get("file_name", ""))
        image = resolve_image(file_name, search) if file_name else None
        boxes = [_raw_box(a, id_to_name) for a in by_image.get(img.get("id"), [])]
        builder.add_image(
            image,
            boxes,
            source=f"{path} (image {file_name or img.get('id')})",
            annotated_size=(img.get("width", 0), img.get("height", 0)),
            split=split,
            image_id=img.get("id"),
        )


def read(
    path: Path, *, strict: bool = False, classes: list[str] | None = None, on_unknown_class: str = "drop", **_
) -> Dataset:
    files = _coco_files(path)
    if not files:
        raise DataError(f"{path}: no COCO JSON found (expected a file with 'images' and 'categories')")
    loaded = [(f, _load(f)) for f in files]
    builder = DetectionBuilder(
        "coco", path if path.is_dir() else path.parent, classes, strict, on_unknown_class
    )
    categories = _categories(loaded, builder)
    for f, data in loaded:
        _read_file(f, data, categories[f], builder)
    return builder.build()


def _coco_dict(dataset: Dataset, records: list, image_paths: list[Path], base: Path) -> dict:
    images, annotations = [], []
    for image_id, (rec, image_path) in enumerate(zip(records, image_paths, strict=True)):
        rel = image_path.relative_to(base) if image_path.is_relative_to(base) else image_path
        images.append({"id": image_id, "file_name": rel.as_posix(), "width": rec.width, "height": rec.height})
        for box, label, crowd in zip(
            rec.boxes.tolist(), rec.labels.tolist(), rec.iscrowd.tolist(), strict=True
        ):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations),
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                    "area": round((x2 - x1) * (y2 - y1), 3),
                    "iscrowd": int(crowd),
                    "segmentation": [],
                }
            )
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


register_format(Format("coco", sniff, read, write, priority=20))
