"""CVAT for images 1.1 XML: one ``annotations.xml`` for a whole task, job or project export.

Read: ``<image name= width= height= [subset=]>`` elements holding ``<box label= xtl= ytl= xbr= ybr=>``
(a ``rotation`` in degrees about its centre gives the box around the turned rectangle), and polygons,
polylines, points, ellipses and masks as the box around them; image-level ``<tag>`` elements are not
boxes and are left out. The labels of ``<meta>`` fix the class list. An
image ``name`` is looked up under ``images/`` beside the XML (CVAT's export layout), then beside it,
and must lie inside the dataset root (:mod:`lanner.data.paths`). A project export's ``subset``
gives the split.

Write: ``annotations.xml`` (+ the images copied into ``images/`` when ``out`` is a folder; a ``.xml``
path writes only the file, naming the images relative to it). Boxes that carry a model's scores
(predictions) are written as ``source="auto"`` with a ``score`` attribute declared on every label, so
CVAT imports them as pre-annotations ("Upload annotations", format "CVAT 1.1") for a person to
correct. Coordinates are written to 2 decimals.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from lanner._io import write_atomic
from lanner.data.formats import Format, annotation_file, register_format
from lanner.data.paths import Confinement
from lanner.data.records import Dataset, canonical_split
from lanner.data.validate import (
    DetectionBuilder,
    RawBox,
    bounding_box,
    format_number,
    label_names,
    number_list,
    place_image,
    require_detection,
    resolve_image,
)
from lanner.errors import DataError

ANNOTATION_FILE = "annotations.xml"
SCORE_ATTRIBUTE = "score"


def _is_cvat_xml(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(4096)
    return b"<annotations>" in head and b"<version>1.1</version>" in head


def _cvat_file(path: Path) -> Path | None:
    """``path`` when it is a CVAT XML, else ``annotations.xml`` (or the one such XML) in the folder."""
    return annotation_file(path, ".xml", _is_cvat_xml, ANNOTATION_FILE)


def sniff(path: Path) -> bool:
    return _cvat_file(path) is not None


def _parse(xml_path: Path) -> ET.Element:
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError, ValueError) as e:
        raise DataError(f"{xml_path}: not readable CVAT XML ({e})") from e
    if root.tag != "annotations":
        raise DataError(f"{xml_path}: not CVAT XML (the root element is <{root.tag}>, not <annotations>)")
    return root


def _declared_labels(root: ET.Element) -> list[str] | None:
    """The label names of ``<meta>`` (task, job or project), or None when it lists none."""
    names = [(n.text or "").strip() for n in root.iterfind("meta//labels/label/name")]
    return [n for n in names if n] or None


NAN_BOX = [float("nan")] * 4  # a shape whose coordinates are missing or no numbers: the builder says so


def _numbers(node: ET.Element, *keys: str) -> list[float]:
    return number_list([node.get(k, "nan") for k in keys]) or [float("nan")] * len(keys)


def _box(node: ET.Element) -> list[float]:
    """A rectangle, turned ``rotation`` degrees about its centre (CVAT 2.x): the box around it."""
    x1, y1, x2, y2 = _numbers(node, "xtl", "ytl", "xbr", "ybr")
    turn = math.radians(_numbers(node, "rotation")[0]) if node.get("rotation") else 0.0
    if not turn:
        return [x1, y1, x2, y2]
    cx, cy, cos, sin = (x1 + x2) / 2, (y1 + y2) / 2, math.cos(turn), math.sin(turn)

    def turned(x: float, y: float) -> tuple[float, float]:
        return cx + (x - cx) * cos - (y - cy) * sin, cy + (x - cx) * sin + (y - cy) * cos

    return list(bounding_box(turned(x, y) for x in (x1, x2) for y in (y1, y2)))


def _points(node: ET.Element) -> list[float]:
    """Polygons, polylines and points: ``points="x,y;x,y;..."``."""
    pairs = [p.split(",") for p in node.get("points", "").split(";") if p.strip()]
    flat = number_list([v for p in pairs for v in p]) if all(len(p) == 2 for p in pairs) else None
    box = bounding_box(zip(flat[::2], flat[1::2], strict=True)) if flat else None
    return list(box) if box else list(NAN_BOX)


def _ellipse(node: ET.Element) -> list[float]:
    cx, cy, rx, ry = _numbers(node, "cx", "cy", "rx", "ry")
    return [cx - rx, cy - ry, cx + rx, cy + ry]


def _mask(node: ET.Element) -> list[float]:
    """A mask's bounding rectangle (its ``rle`` pixels lie inside it)."""
    left, top, width, height = _numbers(node, "left", "top", "width", "height")
    return [left, top, left + width, top + height]


SHAPE_BOXES = {"box": _box, "polygon": _points, "polyline": _points, "points": _points,
               "ellipse": _ellipse, "mask": _mask}  # fmt: skip


def _boxes(image: ET.Element) -> list[RawBox]:
    """Every shape of an image as a box; image-level ``<tag>`` elements are not boxes."""
    return [
        RawBox(node.get("label", ""), SHAPE_BOXES[node.tag](node))
        for node in image
        if node.tag in SHAPE_BOXES
    ]


def read(
    path: Path,
    *,
    strict: bool = False,
    classes: list[str] | None = None,
    on_unknown_class: str = "drop",
    allow_outside_root: bool = False,
    **_,
) -> Dataset:
    xml_path = _cvat_file(path)
    if xml_path is None:
        raise DataError(f"{path}: no CVAT for images 1.1 XML (expected annotations.xml)")
    root, base = _parse(xml_path), xml_path.parent
    within = Confinement.of(path, allow_outside_root)
    declared = classes or _declared_labels(root)
    builder = DetectionBuilder("cvat", base, declared, strict, on_unknown_class, within=within)
    for index, image in enumerate(root.findall("image")):
        name = image.get("name", "")
        if not name:
            builder.note(xml_path, f"<image> #{index + 1} has no name", "skipped", "malformed")
            continue
        builder.add_image(
            resolve_image(name, [base / "images", base], within=within),
            _boxes(image),
            source=f"{xml_path} (image {name})",
            annotated_size=number_list([image.get("width", "nan"), image.get("height", "nan")]),
            split=canonical_split(image.get("subset") or None),
        )
    return builder.build()


# ------------------------------------------------------------------------------------------ write
def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    node = ET.SubElement(parent, tag, attrs)
    if text is not None:
        node.text = text
    return node


def _meta(parent: ET.Element, dataset: Dataset, scored: bool) -> None:
    task = _sub(_sub(parent, "meta"), "task")
    _sub(task, "name", dataset.root.name if dataset.root else "lanner")
    _sub(task, "size", str(len(dataset.records)))
    _sub(task, "mode", "annotation")
    labels = _sub(task, "labels")
    for name in dataset.classes:
        label = _sub(labels, "label")
        _sub(label, "name", name)
        _sub(label, "type", "rectangle")
        attributes = _sub(label, "attributes")
        if scored:  # a number attribute "min;max;step", as CVAT declares them
            attr = _sub(attributes, "attribute")
            for tag, text in (("name", SCORE_ATTRIBUTE), ("mutable", "False"), ("input_type", "number")):
                _sub(attr, tag, text)
            _sub(attr, "default_value", "0")
            _sub(attr, "values", "0;1;0.001")


def _image(parent: ET.Element, dataset: Dataset, rec, index: int, name: str) -> None:
    attrs = {"id": str(index), "name": name, "width": str(rec.width), "height": str(rec.height)}
    image = _sub(parent, "image", **({**attrs, "subset": rec.split} if rec.split else attrs))
    scores = rec.scores.tolist() if rec.scores is not None else [None] * rec.num_boxes
    for label, box, score in zip(label_names(dataset, rec), rec.boxes.tolist(), scores, strict=True):
        corners = dict(zip(("xtl", "ytl", "xbr", "ybr"), (format_number(v, 2) for v in box), strict=True))
        source = "manual" if score is None else "auto"
        node = _sub(image, "box", label=label, source=source, occluded="0", **corners, z_order="0")
        if score is not None:
            _sub(node, "attribute", format_number(score, 4), name=SCORE_ATTRIBUTE)


def write(dataset: Dataset, out: Path) -> None:
    require_detection(dataset, "CVAT XML")
    single_file = out.suffix.lower() == ".xml"
    xml_path = out if single_file else out / ANNOTATION_FILE
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    root = ET.Element("annotations")
    _sub(root, "version", "1.1")
    _meta(root, dataset, any(r.scores is not None for r in dataset.records))
    taken: set[str] = set()
    for index, rec in enumerate(dataset.records):
        if single_file:
            name = os.path.relpath(rec.path.resolve(), xml_path.parent.resolve())
        else:
            name = place_image(rec.path, out / "images", taken).name
        _image(root, dataset, rec, index, Path(name).as_posix())
    tree = ET.ElementTree(root)
    ET.indent(tree)
    write_atomic(xml_path, lambda tmp: tree.write(tmp, encoding="utf-8", xml_declaration=True))


# Before VOC (25), whose sniffer would take ``<annotations>`` for its ``<annotation>``.
register_format(Format("cvat", sniff, read, write, priority=22, keeps_crowd=False, keeps_ignore=False))
