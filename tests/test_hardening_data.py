"""Hardening of the data layer: paths that leave the dataset, malformed values, honest conversions.

Real files throughout: small PIL images and annotation files written into tmp_path. A Python audit
hook records every file opened, so "the outside file is never opened" is checked, not assumed.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from malformed import FORMATS, expected_counts, mutate, write_base
from PIL import Image

from lanner.data.convert import convert
from lanner.data.formats import read_dataset
from lanner.data.paths import Confinement, OutsideRootError, confine, dataset_root
from lanner.errors import DataError, LannerError

_OPENED: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one only appends to a list


@pytest.fixture
def opened() -> list[str]:
    _OPENED.clear()
    return _OPENED


def _image(path: Path, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


# -- path traversal --------------------------------------------------------------------------------


def _write_coco(ds: Path, refs: list[str]) -> Path:
    images = [{"id": i, "file_name": r, "width": 40, "height": 30} for i, r in enumerate(refs)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 9, 9]} for i in range(len(refs))]
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}
    (ds / "ann.json").write_text(json.dumps(data))
    return ds / "ann.json"


def _write_voc(ds: Path, refs: list[str]) -> Path:
    for i, ref in enumerate(refs):
        (ds / f"a{i}.xml").write_text(
            f"<annotation><filename>{ref}</filename><object><name>cat</name><bndbox><xmin>1</xmin>"
            "<ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"
        )
    return ds


def _write_labelme(ds: Path, refs: list[str]) -> Path:
    for i, ref in enumerate(refs):
        shape = {"label": "cat", "points": [[1, 1], [9, 9]], "shape_type": "rectangle"}
        (ds / f"a{i}.json").write_text(json.dumps({"shapes": [shape], "imagePath": ref, "imageData": None}))
    return ds


def _write_csv_boxes(ds: Path, refs: list[str]) -> Path:
    rows = "".join(f"{r},1,1,9,9,cat\n" for r in refs)
    (ds / "boxes.csv").write_text("path,xmin,ymin,xmax,ymax,label\n" + rows)
    return ds / "boxes.csv"


def _write_csv(ds: Path, refs: list[str]) -> Path:
    (ds / "labels.csv").write_text("path,label\n" + "".join(f"{r},cat\n" for r in refs))
    return ds / "labels.csv"


def _write_yolo(ds: Path, refs: list[str]) -> Path:
    (ds / "list.txt").write_text("".join(f"{r}\n" for r in refs))
    (ds / "data.yaml").write_text("train: list.txt\nval: list.txt\nnames: [cat]\n")
    return ds / "data.yaml"


def _write_cvat(ds: Path, refs: list[str]) -> Path:
    images = "".join(
        f'<image id="{i}" name="{r}" width="40" height="30">'
        '<box label="cat" xtl="1" ytl="1" xbr="9" ybr="9"></box></image>'
        for i, r in enumerate(refs)
    )
    (ds / "annotations.xml").write_text(f"<annotations><version>1.1</version>{images}</annotations>")
    return ds / "annotations.xml"


def _write_label_studio(ds: Path, refs: list[str]) -> Path:
    box = {"x": 2.5, "y": 3.3, "width": 20, "height": 26.7, "rectanglelabels": ["cat"]}
    result = {"type": "rectanglelabels", "original_width": 40, "original_height": 30, "value": box}
    tasks = [
        {"id": i, "data": {"image": f"/data/local-files/?d={r}"}, "annotations": [{"result": [result]}]}
        for i, r in enumerate(refs)
    ]
    (ds / "export.json").write_text(json.dumps(tasks))
    return ds / "export.json"


WRITERS = {
    "coco": _write_coco,
    "cvat": _write_cvat,
    "label_studio": _write_label_studio,
    "voc": _write_voc,
    "labelme": _write_labelme,
    "csv_boxes": _write_csv_boxes,
    "csv": _write_csv,
    "yolo": _write_yolo,
}


def _escapes(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A dataset folder holding images/in.jpg, and the ways an annotation can name a file outside it."""
    ds = tmp_path / "ds"
    _image(ds / "images" / "in.jpg")
    outside = _image(tmp_path / "outside.jpg")  # a perfectly valid image: only the rule keeps it out
    (ds / "images" / "link.jpg").symlink_to(outside)
    refs = {"relative": "../outside.jpg", "absolute": str(outside), "symlink": "images/link.jpg"}
    return ds, refs


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("how", ["relative", "absolute", "symlink"])
def test_paths_leaving_the_dataset_are_refused_and_never_opened(tmp_path, opened, fmt, how):
    ds, refs = _escapes(tmp_path)
    bad = refs[how] if fmt != "voc" or how != "relative" else "../../outside.jpg"
    if fmt == "voc" and how != "symlink":
        _image(ds / "in.jpg")  # flat VOC: images beside the XML files
        good = "in.jpg"
    else:
        good = "images/in.jpg"
    source = WRITERS[fmt](ds, [good, bad])
    read_from = source if fmt not in ("voc",) else ds
    opened.clear()  # writing the test files opened them; from here on only the reader opens files
    dataset = read_dataset(read_from, fmt)
    outside = (tmp_path / "outside.jpg").resolve()
    assert [r.path.name for r in dataset.records] == ["in.jpg"]
    (issue,) = [i for i in dataset.issues if i.kind == "outside_root"]
    assert issue.action == "skipped" and "outside the dataset root" in issue.problem
    naming_file = {"voc": "a1.xml", "labelme": "a1.json", "yolo": "list.txt"}.get(fmt, source.name)
    assert Path(issue.path.split(" (")[0].rsplit(":", 1)[0]).name == naming_file
    assert bad in issue.problem or str(ds / bad) in issue.problem
    if fmt != "csv":  # the classification CSV reader opens no images at all
        assert any(Path(p).name == "in.jpg" for p in opened)  # the hook sees what the reader opens
    assert not any(Path(p).resolve() == outside for p in opened), "the outside file was opened"
    with pytest.raises(DataError, match="outside the dataset root"):
        read_dataset(read_from, fmt, strict=True)


def test_allow_outside_root_is_the_explicit_opt_in(tmp_path):
    ds, refs = _escapes(tmp_path)
    source = _write_coco(ds, ["images/in.jpg", refs["relative"], refs["absolute"]])
    dataset = read_dataset(source, allow_outside_root=True)
    assert [r.path.name for r in dataset.records] == ["in.jpg", "outside.jpg", "outside.jpg"]
    assert dataset.issues == []


def test_folder_class_symlink_leading_out_is_refused(tmp_path, opened):
    ds, _ = _escapes(tmp_path)
    _image(ds / "cat" / "a.jpg")
    (ds / "dog").mkdir()
    (ds / "dog" / "b.jpg").symlink_to(tmp_path / "outside.jpg")
    (ds / "images").rename(tmp_path / "unused")
    dataset = read_dataset(ds, "folder")
    assert [r.path.name for r in dataset.records] == ["a.jpg"]
    assert [i.kind for i in dataset.issues] == ["outside_root"]


def test_the_dataset_root_rule(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text("{}")
    (tmp_path / "ann.json").write_text("{}")
    assert dataset_root(tmp_path) == tmp_path
    assert dataset_root(tmp_path / "ann.json") == tmp_path
    assert dataset_root(tmp_path / "annotations" / "instances_val.json") == tmp_path
    with pytest.raises(OutsideRootError, match="ann.json: .*outside.jpg resolves outside"):
        confine(tmp_path / ".." / "outside.jpg", tmp_path, source="ann.json")
    assert confine(tmp_path / "x" / ".." / "ann.json", tmp_path) == tmp_path / "x" / ".." / "ann.json"
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    assert not Confinement(tmp_path).contains(loop) or loop.resolve(strict=False).is_relative_to(tmp_path)


# -- malformed values ------------------------------------------------------------------------------


def _coco_file(tmp_path: Path, data) -> Path:
    _image(tmp_path / "0.jpg")
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data) if not isinstance(data, bytes) else "")
    if isinstance(data, bytes):
        path.write_bytes(data)
    return path


def _coco_data(bboxes, categories=None, image_ids=None) -> dict:
    anns = [
        {"id": i, "image_id": (image_ids or [0] * len(bboxes))[i], "category_id": 1, "bbox": b}
        for i, b in enumerate(bboxes)
    ]
    cats = categories if categories is not None else [{"id": 1, "name": "cat"}]
    return {"images": [{"id": 0, "file_name": "0.jpg"}], "annotations": anns, "categories": cats}


def test_coco_malformed_bboxes_are_dropped_with_issues(tmp_path):
    bad = [["abc", 1, 2, 3], 5, [1, 2], None, [1, 1, float("inf"), 3], [True, 1, 2, 3]]
    ds = read_dataset(_coco_file(tmp_path, _coco_data([[1, 1, 5, 5], *bad])))
    assert ds.records[0].num_boxes == 1
    dropped = [i for i in ds.issues if i.action == "dropped"]
    assert len(dropped) == len(bad) and all("ann.json (image 0.jpg)" in i.path for i in dropped)
    assert "'abc'" in dropped[0].problem


def test_coco_categories_without_id_or_name_and_dangling_image_ids(tmp_path):
    cats = [{"id": 1, "name": "cat"}, {"name": "dog"}, {"id": 3}, "bird", {"id": [4], "name": "x"}]
    data = _coco_data([[1, 1, 5, 5], [2, 2, 5, 5]], cats, image_ids=[0, 99])
    ds = read_dataset(_coco_file(tmp_path, data))
    assert ds.classes == ["cat"] and ds.records[0].num_boxes == 1
    malformed = [i for i in ds.issues if i.kind == "malformed"]
    assert len(malformed) == 4 and all(i.path.endswith("ann.json") for i in malformed)
    (dangling,) = [i for i in ds.issues if "not in 'images'" in i.problem]
    assert "image_id 99" in dangling.problem and dangling.action == "dropped"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"images": [], "annotations": []}, "no 'categories' list"),
        ([{"images": [], "categories": []}], "no 'images' list"),
        ({"images": [], "categories": [], "annotations": {"a": 1}}, "'annotations' must be a list"),
        (b'{"images": [], "categories": [\xff]}', "not UTF-8"),
        ('{"images": [], "categories": ' + "[" * 100_000, "not a readable COCO JSON"),
    ],
)
def test_coco_files_that_cannot_be_used_raise_a_data_error_naming_the_file(tmp_path, data, message):
    path = tmp_path / "ann.json"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(DataError, match=message) as info:
        read_dataset(path, "coco")
    assert str(path) in str(info.value)


def test_yolo_class_ids_that_are_not_whole_numbers_are_dropped(tmp_path):
    _image(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels").mkdir()
    lines = ["0 0.5 0.5 0.2 0.2", "inf 0.5 0.5 0.2 0.2", "nan 0.5 0.5 0.2 0.2", "-1 0.5 0.5 0.2 0.2"]
    lines += ["1.5 0.5 0.5 0.2 0.2", "1e999 0.5 0.5 0.2 0.2", "0 inf 0.5 0.2 0.2"]
    (tmp_path / "labels" / "a.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    ds = read_dataset(tmp_path)
    assert ds.records[0].num_boxes == 1
    dropped = [i for i in ds.issues if i.action == "dropped"]
    assert [i.path.rsplit(":", 1)[-1] for i in dropped[:-1]] == ["2", "3", "4", "5", "6"]
    assert dropped[-1].path.endswith("a.txt")  # the builder names the label file of a NaN/inf box
    assert "not a class index" in dropped[0].problem and "NaN/inf" in dropped[-1].problem


def test_detection_csv_missing_a_coordinate_column_names_it(tmp_path):
    _image(tmp_path / "a.jpg")
    (tmp_path / "boxes.csv").write_text("path,xmin,ymin,ymax,label\na.jpg,1,1,9,cat\n")
    with pytest.raises(DataError, match="no xmax column"):
        read_dataset(tmp_path / "boxes.csv")
    with pytest.raises(DataError, match="box columns"):
        read_dataset(tmp_path / "boxes.csv", "csv")


def test_labelme_without_image_path_and_json_lists_are_reported(tmp_path):
    _image(tmp_path / "a.jpg")
    shape = {"label": "cat", "points": [[1, 1], [9, 9]], "shape_type": "rectangle"}
    (tmp_path / "a.json").write_text(json.dumps({"shapes": [shape], "imagePath": "a.jpg"}))
    (tmp_path / "b.json").write_text(json.dumps({"shapes": [shape]}))
    (tmp_path / "c.json").write_text(json.dumps([{"shapes": []}]))
    bad_points = {"label": "cat", "points": [["x", 1], [9, 9]]}
    (tmp_path / "d.json").write_text(json.dumps({"shapes": [bad_points, 7], "imagePath": "a.jpg"}))
    ds = read_dataset(tmp_path, "labelme")
    assert len(ds) == 2 and sum(r.num_boxes for r in ds.records) == 1
    by_file = {Path(i.path).name: i for i in ds.issues}
    assert "no 'imagePath'" in by_file["b.json"].problem and "JSON list" in by_file["c.json"].problem
    assert [i.action for i in ds.issues if i.path.endswith("d.json")] == ["dropped", "dropped"]


def test_voc_text_where_numbers_belong(tmp_path):
    _image(tmp_path / "a.jpg")
    (tmp_path / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>inf</width><height>1e999</height></size>"
        "<object><name>cat</name><bndbox><xmin>abc</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
        "</bndbox></object><object><bndbox><xmin>1</xmin></bndbox></object></annotation>"
    )
    ds = read_dataset(tmp_path)
    assert ds.records[0].num_boxes == 0 and [i.action for i in ds.issues] == ["dropped", "dropped"]


# -- property-based: any mutation of a valid file is read or refused with a DataError --------------


def _check_mutated(fmt: str, rnd: random.Random) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = write_base(fmt, root)
        mutate(fmt, root, rnd)
        try:
            ds = read_dataset(source, fmt)
        except DataError:
            return
        counts = expected_counts(fmt, root)
        if counts is None:
            return
        images, boxes = counts
        skipped = sum(i.action == "skipped" for i in ds.issues)
        dropped = sum(i.action == "dropped" and i.kind != "category" for i in ds.issues)
        assert len(ds.records) + skipped >= images, ds.issues
        kept = sum(r.num_boxes + len(r.ignore) for r in ds.records)
        assert kept + dropped + skipped >= boxes, ds.issues


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rnd=st.randoms(use_true_random=False))
def test_mutated_files_are_read_or_refused_and_every_loss_is_reported(fmt, rnd):
    _check_mutated(fmt, rnd)


# -- conversions keep crowd and ignore regions honest ----------------------------------------------


@pytest.mark.parametrize("to", ["yolo", "csv_boxes", "labelme"])
def test_crowd_regions_are_dropped_and_reported_never_made_ordinary_boxes(tmp_path, to):
    for i in range(2):
        _image(tmp_path / "src" / f"{i}.jpg")
    anns = [
        {"id": 0, "image_id": 0, "category_id": 1, "bbox": [1, 1, 9, 9], "iscrowd": 0},
        {"id": 1, "image_id": 0, "category_id": 1, "bbox": [10, 10, 20, 15], "iscrowd": 1},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [2, 2, 8, 8], "iscrowd": 1},
    ]
    images = [{"id": i, "file_name": f"{i}.jpg"} for i in range(2)]
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}
    (tmp_path / "src" / "ann.json").write_text(json.dumps(data))
    out = convert(tmp_path / "src" / "ann.json", to, tmp_path / to)
    back = read_dataset(out)
    assert sum(r.num_boxes for r in back.records) == 1 and not any(r.iscrowd.any() for r in back.records)
    np.testing.assert_allclose(np.concatenate([r.boxes for r in back.records]), [[1, 1, 10, 10]], atol=0.01)


def test_the_dataset_returned_by_the_api_path_carries_the_losses(tmp_path):
    from lanner.data.convert import convert_dataset

    _image(tmp_path / "src" / "0.jpg")
    anns = [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [1, 1, 9, 9], "iscrowd": 1}]
    data = {
        "images": [{"id": 0, "file_name": "0.jpg"}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "a"}],
    }
    (tmp_path / "src" / "ann.json").write_text(json.dumps(data))
    ds = read_dataset(tmp_path / "src" / "ann.json")
    ds.records[0].ignore = np.array([[20, 20, 30, 25]], dtype=np.float32)
    convert_dataset(ds, "yolo", tmp_path / "yolo", tmp_path / "src")
    (lost,) = [i for i in ds.issues if i.kind == "lost"]
    assert lost.action == "dropped" and "1 crowd box(es) and 1 ignore region(s)" in lost.problem
    assert lost.path.endswith("0.jpg") and "yolo" in lost.problem
    back = read_dataset(tmp_path / "yolo")
    assert back.records[0].num_boxes == 0 and len(back.records[0].ignore) == 0
    assert issubclass(DataError, LannerError)


def test_names_the_os_refuses_are_missing_images_not_crashes(tmp_path):
    """Found by benchmarks/fuzz_readers.py: a 400-digit imagePath raised ENAMETOOLONG from is_file()."""
    _image(tmp_path / "a.jpg")
    shape = {"label": "cat", "points": [[1, 1], [9, 9]], "shape_type": "rectangle"}
    (tmp_path / "a.json").write_text(json.dumps({"shapes": [shape], "imagePath": "a.jpg"}))
    (tmp_path / "b.json").write_text(json.dumps({"shapes": [shape], "imagePath": 10**400}))
    (tmp_path / "c.json").write_text(json.dumps({"shapes": [shape], "imagePath": "x/" * 3000 + "c.jpg"}))
    ds = read_dataset(tmp_path, "labelme")
    assert len(ds) == 1 and sorted(Path(i.path).name for i in ds.issues) == ["b.json", "c.json"]
    assert all("image file not found" in i.problem for i in ds.issues)
