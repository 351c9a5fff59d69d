"""Detection formats read the real datasets of shared/data as they are, and the layouts people use.

Expected numbers are computed from the files with json/xml/csv here, not copied from lanner.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lanner.data.formats import detect_format, get_format, read_dataset, write_dataset
from lanner.errors import DataError

ROBOFLOW_SPLITS = {"train": "train", "valid": "val", "test": "test"}


def _names(ds, rec) -> list[str]:
    return [ds.classes[i] for i in rec.labels]


def _by_name(ds) -> dict[str, object]:
    return {r.path.name: r for r in ds.records}


# -- COCO: Roboflow export of rbc, labelme's own COCO export --------------------------------------


def test_rbc_roboflow_coco_splits_counts_and_placeholder(shared_data):
    root = shared_data / "rbc_roboflow_coco"
    assert detect_format(root) == "coco"
    ds = read_dataset(root)
    for folder, split in ROBOFLOW_SPLITS.items():
        data = json.loads((root / folder / "_annotations.coco.json").read_text())
        part = ds.subset(split)
        assert len(part) == len(data["images"])
        assert sum(r.num_boxes for r in part.records) == len(data["annotations"])
        used = {a["category_id"] for a in data["annotations"]}
        names = {c["id"]: c["name"] for c in data["categories"]}
        counts = Counter(names[a["category_id"]] for a in data["annotations"])
        assert part.class_counts() == {n: counts[n] for n in ds.classes}
    placeholders = [c for c in data["categories"] if c["id"] not in used]
    assert [c["name"] for c in placeholders] == ["RBC-WBC"]
    assert ds.classes == [c["name"] for c in data["categories"] if c["id"] in used] == ["rbc", "wbc"]
    assert ds.splits == ["test", "train", "val"]
    notes = [i for i in ds.issues if i.kind == "category"]
    assert len(notes) == 3 and all("'RBC-WBC'" in i.problem and i.action == "dropped" for i in notes)
    assert len(ds.issues) == 3  # nothing else wrong with this export
    # Float boxes are kept as they are: [x, y, w, h] -> xyxy.
    rec = next(r for r in ds.records if r.split == "val" and r.image_id == 0)
    valid = json.loads((root / "valid" / "_annotations.coco.json").read_text())
    x, y, w, h = valid["annotations"][0]["bbox"]
    assert [x, y, x + w, y + h] in rec.boxes.tolist()
    # Strict mode is not tripped by the placeholder note alone.
    assert len(read_dataset(root / "valid" / "_annotations.coco.json", strict=True)) == 20


def test_labelme_coco_export_drops_background_category(shared_data):
    path = shared_data / "labelme_examples/examples/instance_segmentation/data_dataset_coco/annotations.json"
    data = json.loads(path.read_text())
    assert detect_format(path) == "coco"
    ds = read_dataset(path)
    assert "_background_" not in ds.classes
    assert ds.classes == [c["name"] for c in data["categories"] if c["name"] != "_background_"]
    assert len(ds) == len(data["images"])
    assert sum(r.num_boxes for r in ds.records) == len(data["annotations"])
    assert [i.kind for i in ds.issues] == ["category"]


def _coco(tmp_path: Path, annotations, categories, images=None) -> Path:
    Image.new("RGB", (64, 48)).save(tmp_path / "a.jpg")
    images = images or [{"id": 7, "file_name": "a.jpg", "width": 64, "height": 48}]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_coco_crowd_noncontiguous_ids_missing_images(tmp_path):
    cats = [{"id": 3, "name": "cat"}, {"id": 9, "name": "dog"}, {"id": 11, "name": "empty"}]
    anns = [
        {"id": 1, "image_id": 7, "category_id": 9, "bbox": [1, 2, 10, 20], "iscrowd": 1},
        {"id": 2, "image_id": 7, "category_id": 3, "bbox": [5, 5, 100, 10], "iscrowd": 0},
        {"id": 3, "image_id": 7, "category_id": 42, "bbox": [5, 5, 10, 10], "iscrowd": 0},
    ]
    images = [
        {"id": 7, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 8, "file_name": "missing.jpg", "width": 64, "height": 48},
    ]
    ds = read_dataset(_coco(tmp_path, anns, cats, images))
    assert ds.classes == ["cat", "dog", "empty"]  # a real category with no boxes stays a class
    rec = ds.records[0]
    assert rec.image_id == 7 and rec.iscrowd.tolist() == [True, False]
    assert rec.labels.tolist() == [1, 0]
    np.testing.assert_array_equal(rec.boxes, [[1, 2, 11, 22], [5, 5, 64, 15]])
    kinds = Counter((i.kind, i.action) for i in ds.issues)
    assert kinds == {
        ("category", "fixed"): 1,
        ("box", "fixed"): 1,
        ("class", "dropped"): 1,
        ("image", "skipped"): 1,
    }
    with pytest.raises(DataError, match="missing.jpg"):
        read_dataset(tmp_path / "ann.json", strict=True)


# -- Pascal VOC: raccoon_dataset layout, labelme2voc export ---------------------------------------


def test_raccoon_voc_layout_splits_and_grayscale(shared_data):
    root = shared_data / "raccoon_voc"
    assert detect_format(root) == "voc"
    ds = read_dataset(root)
    xmls = sorted((root / "annotations").glob("*.xml"))
    objects = sum(len(ET.parse(x).getroot().findall("object")) for x in xmls)
    assert len(ds) == len(xmls) == len(list((root / "images").glob("*.jpg")))
    assert sum(r.num_boxes for r in ds.records) == objects
    assert ds.classes == ["raccoon"]
    for split in ("train", "test"):
        with (root / "data" / f"{split}_labels.csv").open() as f:
            names = {row["filename"] for row in csv.DictReader(f)}
        assert {r.path.name for r in ds.subset(split).records} == names
    grayscale = {p.name for p in (root / "images").glob("*.jpg") if Image.open(p).mode == "L"}
    assert len(grayscale) == 3
    records = _by_name(ds)
    assert all(records[name].num_boxes >= 1 for name in grayscale)
    first = ET.parse(root / "annotations" / "raccoon-1.xml").getroot()
    size = first.find("size")
    assert (records["raccoon-1.jpg"].width, records["raccoon-1.jpg"].height) == (
        int(size.findtext("width")),
        int(size.findtext("height")),
    )
    assert ds.issues == []


def test_labelme2voc_export_matches_the_labelme_json(shared_data):
    base = shared_data / "labelme_examples/examples/bbox_detection"
    voc = read_dataset(base / "data_dataset_voc")
    assert voc.format == "voc"  # float coordinates and empty <difficult/> tags are fine
    labels = (base / "data_dataset_voc" / "class_names.txt").read_text().split("\n")
    assert voc.classes == [c for c in labels if c and c != "_background_"]
    for rec in voc.records:
        shapes = json.loads((base / "data_annotated" / f"{rec.path.stem}.json").read_text())["shapes"]
        expected = sorted((s["label"], *np.min(s["points"], 0), *np.max(s["points"], 0)) for s in shapes)
        got = sorted((n, *b) for n, b in zip(_names(voc, rec), rec.boxes.tolist(), strict=True))
        assert [g[0] for g in got] == [e[0] for e in expected]
        np.testing.assert_allclose([g[1:] for g in got], [e[1:] for e in expected], atol=1e-4)
        assert not rec.iscrowd.any()


def test_voc_imagesets_flat_layout_and_difficult(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "ImageSets/Main").mkdir(parents=True)
    for stem, split in (("a", "train"), ("b", "val")):
        Image.new("RGB", (50, 40)).save(tmp_path / "JPEGImages" / f"{stem}.jpg")
        (tmp_path / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>60</width><height>40</height></size>"
            "<object><name>cat</name><difficult>1</difficult><bndbox><xmin>30</xmin><ymin>1</ymin>"
            "<xmax>10</xmax><ymax>20</ymax></bndbox></object></annotation>"
        )
        (tmp_path / "ImageSets/Main" / f"{split}.txt").write_text(f"{stem}\n")
    (tmp_path / "ImageSets/Main/trainval.txt").write_text("a\nb\n")
    ds = read_dataset(tmp_path, format="voc", unused_option=True)  # readers ignore unknown kwargs
    assert {r.path.stem: r.split for r in ds.records} == {"a": "train", "b": "val"}
    assert ds.records[0].iscrowd.tolist() == [True]
    np.testing.assert_array_equal(ds.records[0].boxes, [[10, 1, 30, 20]])
    assert Counter((i.kind, i.action) for i in ds.issues) == {("size", "kept"): 2, ("box", "fixed"): 2}
    # A flat folder: XML files right next to the images.
    flat = tmp_path / "JPEGImages"
    for xml in (tmp_path / "Annotations").glob("*.xml"):
        (flat / xml.name).write_text(xml.read_text())
    assert detect_format(flat) == "voc" and len(read_dataset(flat)) == 2


# -- Labelme ---------------------------------------------------------------------------------------


def test_labelme_examples_shapes_ignore_and_inline_image(shared_data):
    root = shared_data / "labelme_examples/examples"
    assert detect_format(root) == "labelme"
    ds = read_dataset(root)
    files = [p for p in root.rglob("*.json") if "shapes" in json.loads(p.read_text())]
    shapes = [s for p in files for s in json.loads(p.read_text())["shapes"]]
    assert len(ds) == len(files) == 18  # classification examples with no shapes are negatives
    ignores = [s for s in shapes if s["label"] == "__ignore__"]
    points = [s for s in shapes if s["shape_type"] == "point"]
    assert sum(len(r.ignore) for r in ds.records) == len(ignores) == 4
    assert sum(r.num_boxes for r in ds.records) == len(shapes) - len(ignores) - len(points)
    assert "__ignore__" not in ds.classes and "_background_" not in ds.classes
    assert sum(r.num_boxes == 0 for r in ds.records) == 2
    # The tutorial JSON's imagePath names the JSON itself and carries imageData inline.
    tutorial = read_dataset(root / "tutorial" / "apc2016_obj3.json")
    assert tutorial.records[0].path.name == "apc2016_obj3.jpg" and tutorial.records[0].num_boxes == 4
    # Every change is reported: 2 chair polygons past the border are clipped, 1 point dropped.
    assert Counter(i.action for i in ds.issues) == {"fixed": 2, "dropped": 1}


def test_labelme_polygon_and_circle_boxes(shared_data):
    prim = shared_data / "labelme_examples/examples/primitives/primitives.json"
    data = json.loads(prim.read_text())
    ds = read_dataset(prim)
    boxes = dict(zip(_names(ds, ds.records[0]), ds.records[0].boxes.tolist(), strict=True))
    (cx, cy), (px, py) = next(s for s in data["shapes"] if s["shape_type"] == "circle")["points"]
    r = np.hypot(px - cx, py - cy)
    np.testing.assert_allclose(boxes["circle"], [cx - r, cy - r, cx + r, cy + r], rtol=1e-5)
    polygon = np.array(next(s for s in data["shapes"] if s["shape_type"] == "polygon")["points"])
    np.testing.assert_allclose(boxes["polygon"], [*polygon.min(0), *polygon.max(0)], rtol=1e-5)


def test_labelme_labels_txt_fixes_the_class_list(shared_data):
    base = shared_data / "labelme_examples/examples/bbox_detection"
    ds = read_dataset(base)
    labels = [c for c in (base / "labels.txt").read_text().splitlines() if c]
    assert ds.classes == labels[2:] and labels[:2] == ["__ignore__", "_background_"]


def test_labelme_classification_flags_read_and_write_back(shared_data, tmp_path):
    """labelme's own classification example (image-level flags, no shapes) is a classification set."""
    base = shared_data / "labelme_examples/examples/classification/data_annotated"
    ds = read_dataset(base)
    flags = {p.stem: json.loads(p.read_text())["flags"] for p in base.glob("*.json")}
    assert ds.task == "classify" and ds.classes == ["cat", "dog"]
    assert {r.path.stem: ds.classes[r.label] for r in ds.records} == {
        stem: next(k for k, on in f.items() if on) for stem, f in flags.items()
    }
    write_dataset(ds, "labelme", tmp_path / "out")
    assert (tmp_path / "out" / "flags.txt").read_text().split() == ["__ignore__", "cat", "dog"]
    back = read_dataset(tmp_path / "out")
    assert back.classes == ds.classes and sorted(r.label for r in back.records) == sorted(
        r.label for r in ds.records
    )


# -- CSV with boxes --------------------------------------------------------------------------------


def test_raccoon_tf_csv_reads_as_box_csv(shared_data):
    path = shared_data / "raccoon_voc/data/raccoon_labels.csv"
    assert detect_format(path) == "csv_boxes"
    assert not get_format("csv").sniff(path)  # the classification CSV rejects box CSVs
    with path.open() as f:
        rows = list(csv.DictReader(f))
    # The CSV sits in data/ and names images in ../images: outside its root unless the user opts in.
    refused = read_dataset(path)
    assert len(refused) == 0 and len(refused.issues) == len({r["filename"] for r in rows})
    assert all(i.kind == "outside_root" and str(path) in i.path for i in refused.issues)
    ds = read_dataset(path, allow_outside_root=True)
    assert len(ds) == len({r["filename"] for r in rows})
    assert sum(r.num_boxes for r in ds.records) == len(rows)
    assert ds.classes == ["raccoon"] and ds.issues == []


def test_box_csv_negatives_splits_and_problems(tmp_path):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 30)).save(tmp_path / name)
    (tmp_path / "boxes.csv").write_text(
        "path,xmin,ymin,xmax,ymax,label,split\n"
        "a.png,1,2,10,20,cat,train\na.png,1,2,10,20,cat,train\na.png,5,5,5,9,dog,train\n"
        "b.png,,,,,,valid\nc.png,1,1,5,5,cat,train\n"
    )
    ds = read_dataset(tmp_path / "boxes.csv")
    assert ds.format == "csv_boxes" and ds.classes == ["cat"]  # dog's only box was degenerate
    a, b = ds.records
    assert (a.num_boxes, b.num_boxes, a.split, b.split) == (1, 0, "train", "val")
    assert Counter(i.kind for i in ds.issues) == {"duplicate": 1, "box": 1, "image": 1}
    assert all(str(tmp_path / "boxes.csv") in i.path for i in ds.issues)


# -- YOLO ------------------------------------------------------------------------------------------


def _yolo_image(folder: Path, stem: str, lines: list[str], size=(200, 100)) -> None:
    image, labels = folder / "images" / f"{stem}.jpg", folder / "labels" / f"{stem}.txt"
    image.parent.mkdir(parents=True, exist_ok=True)
    labels.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(image)
    if lines is not None:
        labels.write_text("\n".join(lines) + "\n")


def test_yolo_split_folders_with_data_yaml_names_dict(tmp_path):
    _yolo_image(tmp_path / "train", "a", ["0 0.5 0.5 0.5 0.5", "1 0.1 0.1 0.3 0.3 0.3 0.2"])
    _yolo_image(tmp_path / "valid", "b", ["7 0.5 0.5 0.1 0.1", "0 0.5", ""])
    _yolo_image(tmp_path / "valid", "c", None)  # no label file: a negative
    cfg = {
        "path": "/somewhere/on/another/machine",
        "train": "train/images",
        "val": "valid/images",
        "names": {0: "cat", 1: "dog"},
    }
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(cfg))
    assert detect_format(tmp_path) == "yolo"
    ds = read_dataset(tmp_path)
    assert ds.classes == ["cat", "dog"]
    recs = _by_name(ds)
    np.testing.assert_allclose(recs["a.jpg"].boxes, [[50, 25, 150, 75], [20, 10, 60, 30]])  # segment -> box
    assert (recs["a.jpg"].split, recs["b.jpg"].split) == ("train", "val")
    assert recs["b.jpg"].num_boxes == 0 and recs["c.jpg"].num_boxes == 0
    assert Counter(i.kind for i in ds.issues) == {"class": 1, "box": 1}


def test_yolo_images_labels_per_split_with_classes_txt(tmp_path):
    _yolo_image(tmp_path, "train/a", ["0 0.5 0.5 0.2 0.2"])
    (tmp_path / "labels/train/orphan.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # its image is missing
    (tmp_path / "classes.txt").write_text("cat\n")
    assert detect_format(tmp_path) == "yolo"
    ds = read_dataset(tmp_path)
    assert len(ds) == 1 and ds.records[0].split == "train" and ds.records[0].num_boxes == 1
    (issue,) = ds.issues
    assert issue.path.endswith("orphan.txt") and issue.action == "skipped"
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(DataError, match="classes.txt"):
        read_dataset(tmp_path, format="yolo")


def test_yolo_yaml_relative_path_and_names_list(tmp_path):
    _yolo_image(tmp_path / "ds", "x", ["0 0.5 0.5 1.2 0.5"])  # wider than the image: clipped
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg/data.yaml").write_text("path: ../ds\ntrain: images\nval: images\nnames: [bird]\n")
    refused = read_dataset(tmp_path / "cfg/data.yaml")  # ../ds lies outside the yaml's folder
    assert len(refused) == 0 and refused.issues[0].kind == "outside_root"
    ds = read_dataset(tmp_path / "cfg/data.yaml", allow_outside_root=True)
    assert ds.classes == ["bird"] and len(ds) == 1 and ds.records[0].split is None
    np.testing.assert_allclose(ds.records[0].boxes, [[0, 25, 200, 75]])
    assert [i.action for i in ds.issues] == ["fixed"]


def test_official_coco_layout(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    Image.new("RGB", (20, 10)).save(tmp_path / "val2017" / "1.jpg")
    data = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": 20, "height": 10}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "cat"}],
    }
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    assert detect_format(tmp_path) == "coco"
    ds = read_dataset(tmp_path)
    assert ds.splits == ["val"] and ds.records[0].num_boxes == 1 and ds.issues == []


def test_class_folders_are_not_mistaken_for_detection(shared_data):
    assert detect_format(shared_data / "sign_language_digits_cls" / "Dataset") == "folder"
