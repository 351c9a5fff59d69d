"""Conversion between every pair of detection formats keeps every box, class, split and negative."""

from __future__ import annotations

import itertools
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import yaml

from lanner.data.convert import convert, target_format
from lanner.data.formats import detect_format, read_dataset, write_dataset
from lanner.data.records import Dataset
from lanner.errors import DataError

FORMATS = ["coco", "voc", "yolo", "labelme", "csv_boxes"]
# Worst-case rounding each writer introduces, in pixels (documented in each format module).
PRECISION = {"coco": 5e-4, "voc": 0.05, "yolo": 1e-3, "labelme": 5e-3, "csv_boxes": 5e-3}


@pytest.fixture(scope="module")
def rbc_small(shared_data) -> Dataset:
    """The 30 val+test images of the real Roboflow RBC export, with one image made a negative."""
    ds = read_dataset(shared_data / "rbc_roboflow_coco")
    records = [r for r in ds.records if r.split in ("val", "test")]
    negative = records[0]
    negative.boxes, negative.labels = negative.boxes[:0], negative.labels[:0]
    negative.iscrowd = negative.iscrowd[:0]
    return Dataset(ds.classes, records, "detect", ds.root, ds.format, [])


def _content(ds: Dataset) -> dict[str, tuple]:
    """Per image file name: split, and its (class, box) pairs."""
    return {
        rec.path.name: (
            rec.split,
            list(zip((ds.classes[i] for i in rec.labels), rec.boxes.tolist(), strict=True)),
        )
        for rec in ds.records
    }


def _unmatched(expected: list, got: list, tolerance: float) -> list:
    """Expected (class, box) pairs with no same-class box within ``tolerance`` in ``got`` (1:1)."""
    left, missing = list(got), []
    for name, box in expected:
        match = next(
            (g for g in left if g[0] == name and np.abs(np.subtract(g[1], box)).max() <= tolerance), None
        )
        if match is None:
            missing.append((name, box))
        else:
            left.remove(match)
    return missing + left


@pytest.mark.parametrize("src_fmt, dst_fmt", list(itertools.product(FORMATS, FORMATS)))
def test_round_trip_between_every_pair_keeps_every_box(rbc_small, tmp_path, src_fmt, dst_fmt):
    src = write_dataset(rbc_small, src_fmt, tmp_path / "src")
    assert detect_format(src) == src_fmt
    out = convert(src, dst_fmt, tmp_path / "out")
    back = read_dataset(out)
    assert back.format == dst_fmt
    assert back.classes == rbc_small.classes
    assert [i for i in back.issues if i.kind != "category"] == []
    expected, got = _content(rbc_small), _content(back)
    assert got.keys() == expected.keys()
    tolerance = PRECISION[src_fmt] + PRECISION[dst_fmt] + 1e-4
    for name, (split, pairs) in expected.items():
        assert got[name][0] == split, name
        assert _unmatched(pairs, got[name][1], tolerance) == [], name
    assert sum(r.num_boxes == 0 for r in back.records) == 1  # the negative survives


def test_convert_maps_csv_to_box_csv_and_writes_tool_conventions(shared_data, tmp_path):
    assert target_format("csv", "detect") == "csv_boxes" and target_format("csv", "classify") == "csv"
    out = convert(shared_data / "raccoon_voc", "csv", tmp_path / "csv")
    assert detect_format(out) == "csv_boxes"
    assert (out / "annotations.csv").read_text().startswith("path,xmin,ymin,xmax,ymax,label")

    yolo = convert(shared_data / "raccoon_voc", "yolo", tmp_path / "yolo")
    cfg = yaml.safe_load((yolo / "data.yaml").read_text())
    assert cfg["names"] == {0: "raccoon"} and cfg["train"] == "images/train" and cfg["test"] == "images/test"
    line = (yolo / "labels/train/raccoon-11.txt").read_text().split()
    assert line[0] == "0" and all(len(v.split(".")[1]) == 6 for v in line[1:])

    labelme = convert(shared_data / "raccoon_voc", "labelme", tmp_path / "labelme")
    data = json.loads((labelme / "train" / "raccoon-11.json").read_text())
    assert data["imageData"] is None and data["imagePath"] == "raccoon-11.jpg"
    assert {s["shape_type"] for s in data["shapes"]} == {"rectangle"}

    voc = convert(shared_data / "rbc_roboflow_coco", "voc", tmp_path / "voc")
    xml = next((voc / "Annotations").glob("*.xml"))
    assert ET.parse(xml).getroot().findtext("size/width") == "416"
    assert (voc / "ImageSets/Main/val.txt").read_text().count("\n") == 20


def test_convert_labelme_ignore_regions_survive_where_the_format_has_names(shared_data, tmp_path):
    src = shared_data / "labelme_examples/examples/instance_segmentation/data_annotated"
    original = read_dataset(src)
    ignores = sum(len(r.ignore) for r in original.records)
    assert ignores == 2
    for fmt in ("voc", "csv_boxes", "labelme"):
        back = read_dataset(convert(src, fmt, tmp_path / fmt))
        assert sum(len(r.ignore) for r in back.records) == ignores, fmt
        assert sum(r.num_boxes for r in back.records) == sum(r.num_boxes for r in original.records)


def test_crowd_boxes_survive_coco_to_voc_and_back(tmp_path, rbc_small):
    crowd = Dataset(rbc_small.classes, rbc_small.records[1:3], "detect", None, "coco", [])
    for rec in crowd.records:
        rec.iscrowd = np.zeros(rec.num_boxes, dtype=bool)
        rec.iscrowd[0] = True
    write_dataset(crowd, "coco", tmp_path / "coco")
    back = read_dataset(convert(tmp_path / "coco", "voc", tmp_path / "voc"))
    assert sum(int(r.iscrowd.sum()) for r in back.records) == 2


def test_convert_refuses_to_overwrite_its_source(shared_data):
    with pytest.raises(DataError, match="onto itself"):
        convert(shared_data / "raccoon_voc", "voc", shared_data / "raccoon_voc")
