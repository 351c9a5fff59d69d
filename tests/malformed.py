"""Small valid datasets in every detection format, and random ways to break their files.

Shared by the property-based tests (tests/test_hardening_data.py, with Hypothesis driving the
``random.Random``) and the fuzz benchmark (benchmarks/fuzz_readers.py). Each base dataset has
``N_IMAGES`` real images with one box each, so a test can account for every image and box.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image

FORMATS = ("coco", "voc", "yolo", "labelme", "csv_boxes")
N_IMAGES = 3
# Values that break annotation files in the wild (and some that only try to).
WEIRD = [
    "abc", "", float("inf"), float("-inf"), float("nan"), None, [], {}, [1, 2], ["abc", 1, 2, 3], 5,
    10**400, -1, True, 1.5, "1e999", "../../../../etc/passwd", "/etc/passwd", "\x00", "é\u202eX",
    {"id": None}, [[1, 2], [3]],
]  # fmt: skip
WEIRD_TOKENS = ["abc", "", "inf", "-inf", "nan", "-1", "1.5", "1e999", "0x1F", "None", "[]", "\x00", "é"]


def _image(path: Path, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 150)).save(path)
    return path


def write_base(fmt: str, root: Path) -> Path:
    """A valid dataset of ``fmt`` under ``root``; returns what to hand to ``read_dataset``."""
    return {
        "coco": _coco,
        "voc": _voc,
        "yolo": _yolo,
        "labelme": _labelme,
        "csv_boxes": _csv_boxes,
    }[fmt](root)


def _coco(root: Path) -> Path:
    images = [{"id": i, "file_name": f"images/{i}.jpg", "width": 40, "height": 30} for i in range(N_IMAGES)]
    for i in range(N_IMAGES):
        _image(root / "images" / f"{i}.jpg")
    anns = [
        {"id": i, "image_id": i, "category_id": 1 + i % 2, "bbox": [2, 3, 10, 8], "iscrowd": 0}
        for i in range(N_IMAGES)
    ]
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def _voc(root: Path) -> Path:
    for i in range(N_IMAGES):
        _image(root / f"{i}.jpg")
        (root / f"{i}.xml").write_text(
            f"<annotation><filename>{i}.jpg</filename><size><width>40</width><height>30</height>"
            "<depth>3</depth></size><object><name>cat</name><difficult>0</difficult><bndbox>"
            "<xmin>2</xmin><ymin>3</ymin><xmax>12</xmax><ymax>11</ymax></bndbox></object></annotation>"
        )
    return root


def _yolo(root: Path) -> Path:
    for i in range(N_IMAGES):
        _image(root / "images" / f"{i}.jpg")
        (root / "labels").mkdir(exist_ok=True)
        (root / "labels" / f"{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.25 0.25\n")
    (root / "data.yaml").write_text("train: images\nval: images\nnames: [cat, dog]\n")
    return root


def _labelme(root: Path) -> Path:
    for i in range(N_IMAGES):
        _image(root / f"{i}.jpg")
        shape = {"label": "cat", "points": [[2, 3], [12, 11]], "shape_type": "rectangle", "flags": {}}
        data = {"shapes": [shape], "imagePath": f"{i}.jpg", "imageData": None, "imageWidth": 40}
        (root / f"{i}.json").write_text(json.dumps({**data, "imageHeight": 30}))
    return root


def _csv_boxes(root: Path) -> Path:
    lines = ["path,xmin,ymin,xmax,ymax,label"]
    for i in range(N_IMAGES):
        _image(root / f"{i}.jpg")
        lines.append(f"{i}.jpg,2,3,12,11,cat")
    (root / "boxes.csv").write_text("\n".join(lines) + "\n")
    return root / "boxes.csv"


# -- breaking them ---------------------------------------------------------------------------------


def annotation_files(fmt: str, root: Path) -> list[Path]:
    pattern = {"coco": "*.json", "voc": "*.xml", "yolo": "**/*.*", "labelme": "*.json", "csv_boxes": "*.csv"}
    files = sorted(
        p for p in root.glob(pattern[fmt]) if p.suffix in (".json", ".xml", ".txt", ".yaml", ".csv")
    )
    return files


def mutate(fmt: str, root: Path, rng: random.Random, count: int = 1) -> None:
    """Break ``count`` things in the annotation files of the dataset at ``root``, in place."""
    for _ in range(count):
        path = rng.choice(annotation_files(fmt, root))
        if rng.random() < 0.1:
            _mutate_bytes(path, rng)
        elif path.suffix == ".json":
            _mutate_json(path, rng)
        elif path.suffix == ".xml":
            _mutate_xml(path, rng)
        else:
            _mutate_tokens(path, rng)


def _mutate_bytes(path: Path, rng: random.Random) -> None:
    data = path.read_bytes()
    at = rng.randrange(len(data) + 1)
    broken = data[:at] if rng.random() < 0.5 else data[:at] + b"\xff\xfe\x80" + data[at:]
    path.write_bytes(broken)


def _slots(node, slots: list) -> list:
    """Every (container, key) in a JSON tree, the root's children first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in list(items):
        slots.append((node, key))
        _slots(child, slots)
    return slots


def _mutate_json(path: Path, rng: random.Random) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return _mutate_bytes(path, rng)
    slots = _slots(data, [])
    if not slots or rng.random() < 0.03:
        data = rng.choice([[data], "text", 7, None])
    else:
        node, key = rng.choice(slots)
        if rng.random() < 0.3:
            del node[key]
        else:
            node[key] = copy.deepcopy(rng.choice(WEIRD))
    path.write_text(json.dumps(data, allow_nan=True))


def _mutate_xml(path: Path, rng: random.Random) -> None:
    try:
        tree = ET.parse(path)
    except ET.ParseError:
        return _mutate_bytes(path, rng)
    parents = [(p, c) for p in tree.iter() for c in p]
    parent, child = rng.choice(parents)
    if rng.random() < 0.3:
        parent.remove(child)
    else:
        child.text = rng.choice(WEIRD_TOKENS).replace("\x00", "")
    tree.write(path, encoding="unicode")


def _mutate_tokens(path: Path, rng: random.Random) -> None:
    """Replace, drop or add one token of a text file (YOLO labels, data.yaml, CSV cells)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    tokens = re.split(r"([\s,:]+)", text)
    words = [i for i, t in enumerate(tokens) if t and not re.fullmatch(r"[\s,:]+", t)]
    if not words:
        return
    i = rng.choice(words)
    action = rng.random()
    if action < 0.2:
        tokens[i] = ""
    elif action < 0.3:
        tokens[i] += " " + rng.choice(WEIRD_TOKENS)
    else:
        tokens[i] = rng.choice(WEIRD_TOKENS)
    path.write_text("".join(tokens), encoding="utf-8")


# -- what a read must account for ------------------------------------------------------------------


def expected_counts(fmt: str, root: Path) -> tuple[int, int] | None:
    """(images, boxes) the broken files still describe; None when they cannot be parsed at all."""
    try:
        return _COUNTERS[fmt](root)
    except (ValueError, TypeError, KeyError, AttributeError, ET.ParseError, csv.Error):
        return None


def _count_coco(root: Path) -> tuple[int, int]:
    data = json.loads((root / "ann.json").read_text(encoding="utf-8"))
    return len(data["images"]), len(data["annotations"])


def _count_voc(root: Path) -> tuple[int, int]:
    xmls = sorted(root.glob("*.xml"))
    return len(xmls), sum(len(ET.parse(x).getroot().findall(".//object")) for x in xmls)


def _count_yolo(root: Path) -> tuple[int, int]:
    labels = sorted((root / "labels").glob("*.txt"))
    lines = [ln for p in labels for ln in p.read_text(encoding="utf-8", errors="replace").splitlines()]
    return N_IMAGES, sum(1 for ln in lines if ln.strip())


def _count_labelme(root: Path) -> tuple[int, int]:
    images = boxes = 0
    for path in sorted(root.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            images += 1  # unparseable: must be reported
            continue
        if not isinstance(data, dict):
            images += 1
        elif "shapes" in data:
            images += 1
            boxes += len(data["shapes"]) if isinstance(data["shapes"], list) else 0
    return images, boxes


def _count_csv_boxes(root: Path) -> tuple[int, int]:
    text = (root / "boxes.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    names = {(r.get("path") or "").strip() for r in rows}
    boxed = [r for r in rows if any((v or "").strip() for k, v in r.items() if k and k != "path")]
    return len(names), len(boxed)


_COUNTERS = {
    "coco": _count_coco,
    "voc": _count_voc,
    "yolo": _count_yolo,
    "labelme": _count_labelme,
    "csv_boxes": _count_csv_boxes,
}
