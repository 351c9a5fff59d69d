"""Pascal VOC XML: one ``.xml`` per image.

Layouts read (folder names case-insensitive):

* VOC proper: ``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/{train,val,test,trainval}.txt``;
* raccoon_dataset style: ``annotations/`` + ``images/``, with split lists as the TF Object
  Detection API CSVs ``data/{train,test}_labels.csv`` (their ``filename`` column names the images);
* flat: XML files next to their images.

``<filename>`` is looked up in the image folder and must lie inside the dataset root
(:mod:`lanner.data.paths`); ``<path>`` is ignored because it is usually an absolute path on the
annotator's machine (so it can never lead outside the dataset either). ``difficult=1`` objects
become crowd boxes (``iscrowd=True``: neither a hit nor a miss in evaluation), matching VOC's own
evaluation.
A ``class_names.txt`` (labelme2voc) or ``classes.txt`` at the root fixes the class list.

Writing: ``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt`` and
``class_names.txt``. Coordinates are written as integers when they are whole numbers, otherwise
rounded to 1 decimal (most VOC tools parse with ``float``; a few expect integers).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from lanner.data.formats import Format, register_format
from lanner.data.images import is_image_file
from lanner.data.paths import Confinement
from lanner.data.records import Dataset, canonical_split
from lanner.data.validate import (
    IGNORE_LABEL,
    DetectionBuilder,
    RawBox,
    format_number,
    label_names,
    number_list,
    place_image,
    read_class_file,
    read_csv,
    read_text,
    require_detection,
    resolve_image,
)
from lanner.errors import DataError

ANNOTATION_DIRS = ("annotations",)
IMAGE_DIRS = ("jpegimages", "images", "imgs")
SPLIT_FILE_ORDER = ("train", "val", "test", "trainval")


def _child_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    if not root.is_dir():
        return None
    for d in sorted(root.iterdir()):
        if d.is_dir() and d.name.lower() in names:
            return d
    return None


def _is_voc_xml(path: Path) -> bool:
    with path.open("rb") as f:
        return b"<annotation" in f.read(4096)


def _annotation_dir(path: Path) -> Path | None:
    """The folder holding the XML files: ``Annotations/`` when present, else ``path`` itself."""
    sub = _child_dir(path, ANNOTATION_DIRS)
    for d in (sub, path):
        if d is not None and any(_is_voc_xml(x) for x in sorted(d.glob("*.xml"))[:5]):
            return d
    return None


def sniff(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() == ".xml" and _is_voc_xml(path)
    return path.is_dir() and _annotation_dir(path) is not None


def _text(node: ET.Element | None, tag: str, default: str = "") -> str:
    found = node.find(tag) if node is not None else None
    return (found.text or "").strip() if found is not None and found.text else default


def _number(node: ET.Element | None, tag: str) -> float:
    """The number in ``<tag>``; NaN when it is missing or not a number (the builder reports it)."""
    found = number_list([_text(node, tag, "nan")])
    return found[0] if found else float("nan")


def _parse(xml_path: Path) -> ET.Element:
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError, ValueError) as e:  # ValueError: e.g. an unknown encoding declared
        raise DataError(f"{xml_path}: not readable VOC XML ({e})") from e
    if root.tag != "annotation":
        raise DataError(f"{xml_path}: not VOC XML (the root element is <{root.tag}>, not <annotation>)")
    return root


def _objects(root: ET.Element, xml_path: Path, builder: DetectionBuilder) -> list[RawBox]:
    boxes = []
    for index, obj in enumerate(root.iter("object")):
        name = _text(obj, "name")
        if not name:
            builder.note(xml_path, f"<object> #{index + 1} has no <name>", "dropped", "malformed")
            continue
        bnd = obj.find("bndbox")
        xyxy = tuple(_number(bnd, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        # Empty <difficult/> (labelme2voc writes them) means not difficult.
        difficult = _text(obj, "difficult", "0") in ("1", "true", "True")
        boxes.append(RawBox(name, xyxy, difficult))
    return boxes


def _split_lists(root: Path) -> dict[str, str]:
    """Image stem -> split, from ImageSets/Main/*.txt or ``data/<split>_labels.csv``."""
    main = root / "ImageSets" / "Main"
    lists = {s: main / f"{s}.txt" for s in SPLIT_FILE_ORDER if (main / f"{s}.txt").is_file()}
    if "trainval" in lists and ("train" in lists or "val" in lists):
        del lists["trainval"]  # the union of train and val, which are more precise
    splits: dict[str, str] = {}
    for name, file in lists.items():
        split = "train" if name == "trainval" else canonical_split(name)
        for line in read_text(file).splitlines():
            if line.split():
                splits.setdefault(line.split()[0], split)
    if not splits:
        for file in sorted((root / "data").glob("*_labels.csv")) + sorted(root.glob("*_labels.csv")):
            split = canonical_split(file.stem[: -len("_labels")])
            if split not in ("train", "val", "test"):
                continue
            for _, row in read_csv(file)[1]:
                if row.get("filename"):
                    splits.setdefault(Path(row["filename"]).stem, split)
    return splits


def _declared_classes(root: Path) -> list[str] | None:
    for name in ("class_names.txt", "classes.txt", "labels.txt"):
        found = read_class_file(root / name)
        if found is not None:
            return found
    return None


def read(
    path: Path,
    *,
    strict: bool = False,
    classes: list[str] | None = None,
    on_unknown_class: str = "drop",
    allow_outside_root: bool = False,
    **_,
) -> Dataset:
    if path.is_file():
        root, xml_files = path.parent, [path]
    else:
        ann_dir = _annotation_dir(path)
        if ann_dir is None:
            raise DataError(f"{path}: no Pascal VOC XML files (expected Annotations/*.xml or *.xml)")
        root, xml_files = path, sorted(ann_dir.glob("*.xml"))
    image_dir = _child_dir(root, IMAGE_DIRS)
    search = [d for d in (image_dir, root) if d is not None]
    splits = _split_lists(root)
    within = Confinement.of(path, allow_outside_root)
    declared = classes or _declared_classes(root)
    builder = DetectionBuilder("voc", root, declared, strict, on_unknown_class, within=within)
    for xml_path in xml_files:
        if not builder.admit(xml_path, xml_path):
            continue  # a symlink leading out of the dataset: not ours to read
        ann = _parse(xml_path)
        file_name = _text(ann, "filename") or xml_path.stem
        image = resolve_image(file_name, [*search, xml_path.parent], stem_fallback=True, within=within)
        if image is None and not Path(file_name).suffix:
            image = resolve_image(
                xml_path.stem, [*search, xml_path.parent], stem_fallback=True, within=within
            )
        size = ann.find("size")
        builder.add_image(
            image,
            _objects(ann, xml_path, builder),
            source=xml_path,
            annotated_size=(_number(size, "width"), _number(size, "height")),
            split=splits.get(xml_path.stem),
        )
    return builder.build()


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    node = ET.SubElement(parent, tag)
    if text is not None:
        node.text = text
    return node


def _object(parent: ET.Element, name: str, box: list[float], difficult: bool) -> None:
    obj = _sub(parent, "object")
    _sub(obj, "name", name)
    _sub(obj, "pose", "Unspecified")
    _sub(obj, "truncated", "0")
    _sub(obj, "difficult", "1" if difficult else "0")
    bnd = _sub(obj, "bndbox")
    for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
        _sub(bnd, tag, format_number(value, 1))


def _annotation_xml(dataset: Dataset, rec, image: Path) -> ET.ElementTree:
    ann = ET.Element("annotation")
    _sub(ann, "folder", image.parent.name)
    _sub(ann, "filename", image.name)
    size = _sub(ann, "size")
    _sub(size, "width", str(rec.width))
    _sub(size, "height", str(rec.height))
    _sub(size, "depth", "3")
    _sub(ann, "segmented", "0")
    for name, box, crowd in zip(
        label_names(dataset, rec), rec.boxes.tolist(), rec.iscrowd.tolist(), strict=True
    ):
        _object(ann, name, box, crowd)
    # Ignore regions as labelme2voc-style ``__ignore__`` objects, which lanner reads back as such.
    for box in rec.ignore.tolist():
        _object(ann, IGNORE_LABEL, box, False)
    tree = ET.ElementTree(ann)
    ET.indent(tree)
    return tree


def write(dataset: Dataset, out: Path) -> None:
    require_detection(dataset, "Pascal VOC")
    ann_dir, img_dir = out / "Annotations", out / "JPEGImages"
    ann_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    split_lists: dict[str, list[str]] = {}
    for rec in dataset.records:
        if not is_image_file(rec.path):
            continue
        image = place_image(rec.path, img_dir, taken)
        _annotation_xml(dataset, rec, image).write(ann_dir / f"{image.stem}.xml", encoding="utf-8")
        if rec.split:
            split_lists.setdefault(rec.split, []).append(image.stem)
    main = out / "ImageSets" / "Main"
    for split, stems in split_lists.items():
        main.mkdir(parents=True, exist_ok=True)
        (main / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems), encoding="utf-8")
    (out / "class_names.txt").write_text("".join(f"{c}\n" for c in dataset.classes), encoding="utf-8")


register_format(Format("voc", sniff, read, write, priority=25))
