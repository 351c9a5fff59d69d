"""Round trips with annotation tools: CVAT XML (images 1.1), Label Studio JSON and Open Images CSVs
written by hand as those tools write them, read through the format registry, converted and read back;
predictions written as CVAT / Label Studio pre-annotations with their scores, and as COCO results
that pycocotools evaluates against the COCO file written beside them."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from helpers import save_untrained_detector
from rich.console import Console

from lanner import cli
from lanner.config import InferenceOptions
from lanner.data.formats import detect_format, read_dataset
from lanner.tasks.detect.predict import predict_detection_files
from lanner.tasks.loading import load_run

SIZE = 416  # the rbc images are 416 x 416


@pytest.fixture(scope="module")
def rbc(shared_data) -> list[Path]:
    return sorted((shared_data / "rbc_roboflow_coco" / "test").glob("*.jpg"))[:2]


def _boxes(dataset) -> dict[str, list]:
    """Image file name -> sorted (class, x1, y1, x2, y2) rounded to 0.01 px."""
    out = {}
    for rec in dataset.records:
        names = [dataset.classes[int(i)] for i in rec.labels]
        out[rec.path.name] = sorted(
            (n, *np.round(b, 2).tolist()) for n, b in zip(names, rec.boxes.tolist(), strict=True)
        )
    return out


# --------------------------------------------------------------------------------------------- CVAT
CVAT_XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id><name>blood</name><size>2</size><mode>annotation</mode>
      <labels>
        <label><name>RBC</name><color>#fa3253</color><type>rectangle</type><attributes/></label>
        <label><name>WBC</name><color>#33ddff</color><type>any</type><attributes/></label>
        <label><name>Platelets</name><color>#b83df5</color><type>rectangle</type><attributes/></label>
      </labels>
    </task>
    <dumped>2024-05-02 10:11:12.123456+00:00</dumped>
  </meta>
  <image id="0" name="{a}" width="416" height="416" subset="Train">
    <box label="RBC" source="manual" occluded="0" xtl="10.50" ytl="20.00" xbr="60.25" ybr="80.00" z_order="0">
    </box>
    <polygon label="WBC" source="manual" occluded="1" z_order="0"
      points="100.00,100.00;150.00,90.00;160.00,170.00">
    </polygon>
    <tag label="RBC" source="manual"></tag>
  </image>
  <image id="1" name="{b}" width="416" height="416" subset="Validation">
    <box label="RBC" source="manual" occluded="0" xtl="300" ytl="310" xbr="380" ybr="400" rotation="90.0"
      z_order="0"></box>
    <ellipse label="WBC" source="manual" occluded="0" cx="50" cy="60" rx="10" ry="20" z_order="0"></ellipse>
  </image>
</annotations>
"""


def _cvat_export(folder: Path, images: list[Path]) -> Path:
    """A CVAT "CVAT for images 1.1" export as unzipped: annotations.xml and images/."""
    (folder / "images").mkdir(parents=True)
    for src in images:
        shutil.copy(src, folder / "images" / src.name)
    text = CVAT_XML.replace("{a}", images[0].name).replace("{b}", images[1].name)
    (folder / "annotations.xml").write_text(text)
    return folder


def test_a_cvat_export_reads_and_round_trips(rbc, tmp_path):
    export = _cvat_export(tmp_path / "cvat", rbc)
    assert detect_format(export) == "cvat"  # not taken for Pascal VOC's <annotation>
    data = read_dataset(export)
    assert data.classes == ["RBC", "WBC", "Platelets"]  # the task's labels, one without boxes
    assert {r.path.name: r.split for r in data.records} == {rbc[0].name: "train", rbc[1].name: "val"}
    boxes = _boxes(data)
    assert boxes[rbc[0].name] == [("RBC", 10.5, 20.0, 60.25, 80.0), ("WBC", 100.0, 90.0, 160.0, 170.0)]
    # turned a quarter about its centre; an ellipse's box
    assert boxes[rbc[1].name] == [("RBC", 295.0, 315.0, 385.0, 395.0), ("WBC", 40.0, 40.0, 60.0, 80.0)]
    assert cli.run_cli(["convert", str(export), "--to", "cvat", str(tmp_path / "again")]) == 0
    back = read_dataset(tmp_path / "again")
    assert back.classes == data.classes and _boxes(back) == _boxes(data)
    assert {r.split for r in back.records} == {"train", "val"}
    assert cli.run_cli(["convert", str(export), "--to", "coco", str(tmp_path / "coco")]) == 0
    assert sorted(_boxes(read_dataset(tmp_path / "coco")).values()) == sorted(_boxes(data).values())


def test_broken_or_escaping_cvat_files_are_named(rbc, tmp_path, capsys):
    export = _cvat_export(tmp_path / "cvat", rbc)
    xml = export / "annotations.xml"
    xml.write_text(xml.read_text().replace(f'name="{rbc[1].name}"', 'name="../../outside.jpg"'))
    shutil.copy(rbc[1], tmp_path / "outside.jpg")
    data = read_dataset(export)
    assert len(data.records) == 1 and any(i.kind == "outside_root" for i in data.issues)
    xml.write_text(xml.read_text()[:-40])  # cut short
    assert cli.run_cli(["check", str(export), "--format", "cvat"]) == 2
    out = capsys.readouterr().out
    assert "annotations.xml: not readable CVAT XML" in out and "Traceback" not in out


# ------------------------------------------------------------------------------------- Label Studio
def _ls_export(folder: Path, images: list[Path]) -> Path:
    """A Label Studio "JSON" project export: an uploaded image (hash-prefixed name), one served from
    local storage, a task whose only annotation was cancelled, and a task nobody labelled."""
    (folder / "images").mkdir(parents=True)
    shutil.copy(images[0], folder / "images" / images[0].name)
    shutil.copy(images[1], folder / images[1].name)

    def rect(x, y, w, h, label, rotation=0):
        return {
            "original_width": SIZE,
            "original_height": SIZE,
            "image_rotation": 0,
            "value": {
                "x": x,
                "y": y,
                "width": w,
                "height": h,
                "rotation": rotation,
                "rectanglelabels": [label],
            },
            "id": f"r{x}",
            "from_name": "label",
            "to_name": "image",
            "type": "rectanglelabels",
            "origin": "manual",
        }

    tasks = [
        {
            "id": 1,
            "data": {"image": f"/data/upload/3/8f2a9c1e-{images[1].name}"},
            "annotations": [
                {"id": 1, "was_cancelled": False, "result": [rect(25, 50, 12.5, 25, "RBC")]},
                {"id": 2, "was_cancelled": False, "result": [rect(10, 10, 50, 50, "WBC", rotation=90)]},
            ],
            "predictions": [],
        },
        {
            "id": 2,
            "data": {"image": f"/data/local-files/?d=images/{images[0].name}"},
            "annotations": [
                {
                    "id": 3,
                    "result": [
                        rect(0, 0, 100, 100, "RBC"),
                        {
                            "type": "choices",
                            "value": {"choices": ["blurry"]},
                            "from_name": "q",
                            "to_name": "image",
                        },
                    ],
                }
            ],
        },
        {
            "id": 3,
            "data": {"image": "/data/upload/3/0a1b2c3d-gone.jpg"},
            "annotations": [{"result": [], "was_cancelled": True}],
        },
        {"id": 4, "data": {"image": "/data/upload/3/0a1b2c3d-never.jpg"}, "annotations": []},
    ]
    (folder / "project-1-at-2024-05-02.json").write_text(json.dumps(tasks))
    return folder


def test_a_label_studio_export_reads_and_round_trips(rbc, tmp_path):
    export = _ls_export(tmp_path / "ls", rbc)
    assert detect_format(export) == "label_studio"
    data = read_dataset(export)
    boxes = _boxes(data)
    # the latest annotation counts; a 50% square turned 90 degrees about its top-left corner
    assert boxes[rbc[1].name] == [("WBC", 0.0, 41.6, 41.6, 249.6)]  # clipped at the left edge
    assert boxes[rbc[0].name] == [("RBC", 0.0, 0.0, 416.0, 416.0)]
    assert sum(i.kind == "unlabelled" for i in data.issues) == 2  # the cancelled and the unlabelled task
    assert cli.run_cli(["convert", str(export), "--to", "labelstudio", str(tmp_path / "again")]) == 0
    tasks = json.loads((tmp_path / "again" / "tasks.json").read_text())
    assert all(t["data"]["image"].startswith("/data/local-files/?d=images/") for t in tasks)
    assert (
        '<RectangleLabels name="label" toName="image">'
        in (tmp_path / "again" / "labeling_config.xml").read_text()
    )
    assert _boxes(read_dataset(tmp_path / "again")) == boxes


# -------------------------------------------------------------------------------------- Open Images
def test_open_images_csvs_read_with_their_class_names_and_round_trip(rbc, tmp_path):
    root = tmp_path / "oi"
    (root / "train").mkdir(parents=True)
    ids = [p.stem for p in rbc]
    for src, image_id in zip(rbc, ids, strict=True):
        shutil.copy(src, root / "train" / f"{image_id}.jpg")
    (root / "class-descriptions-boxable.csv").write_text("/m/0rbc,Red cell\n/m/0wbc,White cell\n")
    (root / "train-annotations-bbox.csv").write_text(
        "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside\n"
        f"{ids[0]},xclick,/m/0rbc,1,0.125,0.25,0.5,0.75,0,0,0,0,0\n"
        f"{ids[0]},xclick,/m/0wbc,1,0.5,1,0,0.5,1,0,1,0,0\n"
        f"{ids[1]},xclick,/m/0rbc,1,0.25,0.5,0.25,0.5,0,0,0,0,0\n"
        f"{ids[1]},verification,/m/0wbc,0,0,0,0,0,0,0,0,0,0\n"
    )
    assert detect_format(root) == "open_images"
    data = read_dataset(root)
    assert data.classes == ["Red cell", "White cell"] and {r.split for r in data.records} == {"train"}
    first = next(r for r in data.records if r.path.stem == ids[0])
    assert np.allclose(first.boxes, [[52, 208, 104, 312], [208, 0, 416, 208]]) and first.iscrowd.tolist() == [
        0,
        1,
    ]
    assert _boxes(data)[f"{ids[1]}.jpg"] == [
        ("Red cell", 104.0, 104.0, 208.0, 208.0)
    ]  # the absence is no box
    assert cli.run_cli(["convert", str(root), "--to", "openimages", str(tmp_path / "again")]) == 0
    back = read_dataset(tmp_path / "again")
    assert back.classes == data.classes and _boxes(back) == _boxes(data)
    assert sorted(r.iscrowd.sum() for r in back.records) == [0, 1]


# -------------------------------------------------------------------------------------- predictions
@pytest.fixture(scope="module")
def predicted(rbc, tmp_path_factory) -> dict[str, Path]:
    """An untrained detector's boxes (threshold 0: plenty) on the two images, in each tool's format."""
    meta = {"task": "detect", "classes": ["rbc", "wbc"], "image_size": 64, "score_threshold": 0.0}
    run = save_untrained_detector(tmp_path_factory.mktemp("runs") / "det", meta)
    images = [str(p) for p in rbc]
    outs = {}
    for fmt in ("cvat", "labelstudio", "coco"):
        outs[fmt] = tmp_path_factory.mktemp(fmt)
        predict_detection_files(load_run(run), images, outs[fmt], InferenceOptions(format=fmt), Console())
    return outs


def _scored(folder: Path) -> dict[str, list]:
    """detections.json as image name -> (class, x1, y1, x2, y2, score) sorted by class and corner."""
    doc = json.loads((folder / "detections.json").read_text())
    return {
        Path(e["path"]).name: sorted(
            (label, *box, score)
            for label, box, score in zip(e["labels"], e["boxes"], e["scores"], strict=True)
        )
        for e in doc["images"]
    }


def _same(found: list, expected: list, box_tol: float = 0.011) -> bool:
    """Equal classes, boxes within rounding (2 decimals), scores within 4 decimals."""
    return len(found) == len(expected) and all(
        f[0] == e[0] and np.allclose(f[1:5], e[1:5], atol=box_tol) and abs(f[5] - e[5]) <= 2e-4
        for f, e in zip(found, expected, strict=True)
    )


def test_cvat_pre_annotations_carry_the_scores(predicted):
    xml = predicted["cvat"] / "cvat.xml"
    root = ET.parse(xml).getroot()
    assert root.findtext("version") == "1.1"
    score_attr = root.find("meta/task/labels/label/attributes/attribute")
    assert score_attr.findtext("name") == "score" and score_attr.findtext("input_type") == "number"
    expected, found = _scored(predicted["cvat"]), {}
    for image in root.iter("image"):
        boxes = image.findall("box")
        assert boxes and all(b.get("source") == "auto" for b in boxes)
        corners = [[float(b.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")] for b in boxes]
        scores = [float(b.findtext("attribute[@name='score']")) for b in boxes]
        labels = [b.get("label") for b in boxes]
        found[Path(image.get("name")).name] = sorted(
            (n, *c, s) for n, c, s in zip(labels, corners, scores, strict=True)
        )
    assert found.keys() == expected.keys()
    assert all(_same(found[name], expected[name]) for name in expected)
    back = read_dataset(xml, allow_outside_root=True)  # the images are where they were predicted
    assert {r.path.name: r.num_boxes for r in back.records} == {k: len(v) for k, v in found.items()}


def test_label_studio_pre_annotations_carry_the_scores(predicted):
    tasks = json.loads((predicted["labelstudio"] / "labelstudio.json").read_text())
    expected, found = _scored(predicted["labelstudio"]), {}
    for task in tasks:
        (prediction,) = task["predictions"]
        assert "annotations" not in task and prediction["model_version"].startswith("lanner")
        results = prediction["result"]
        assert prediction["score"] == pytest.approx(np.mean([r["score"] for r in results]), abs=1e-3)
        found[Path(task["data"]["image"]).name] = sorted(
            (
                r["value"]["rectanglelabels"][0],
                *(r["value"][k] * SIZE / 100 for k in ("x", "y")),
                (r["value"]["x"] + r["value"]["width"]) * SIZE / 100,
                (r["value"]["y"] + r["value"]["height"]) * SIZE / 100,
                r["score"],
            )
            for r in results
        )
    assert found.keys() == expected.keys()
    assert all(_same(found[name], expected[name], box_tol=0.03) for name in expected)
    back = read_dataset(predicted["labelstudio"] / "labelstudio.json", allow_outside_root=True)
    assert {r.path.name: r.num_boxes for r in back.records} == {k: len(v) for k, v in found.items()}


def test_coco_results_evaluate_against_the_coco_file_beside_them(predicted):
    from pycocotools.coco import COCO

    folder = predicted["coco"]
    gt = COCO(str(folder / "coco.json"))
    dt = gt.loadRes(str(folder / "coco_results.json"))
    expected = _scored(folder)
    assert len(dt.anns) == sum(len(v) for v in expected.values()) > 0
    names = {c["id"]: c["name"] for c in gt.loadCats(gt.getCatIds())}
    for image_id, image in gt.imgs.items():
        anns = dt.loadAnns(dt.getAnnIds(imgIds=[image_id]))
        x = [
            (
                names[a["category_id"]],
                a["bbox"][0],
                a["bbox"][1],
                a["bbox"][0] + a["bbox"][2],
                a["bbox"][1] + a["bbox"][3],
                a["score"],
            )
            for a in anns
        ]
        assert _same(sorted(x), expected[Path(image["file_name"]).name])


def test_malformed_entries_become_issues_naming_the_file(rbc, tmp_path):
    ls = tmp_path / "ls"
    ls.mkdir()
    shutil.copy(rbc[0], ls / rbc[0].name)
    bad = [
        {"type": "rectanglelabels", "value": {"x": "left", "rectanglelabels": ["RBC"]}},
        {"type": "polygonlabels", "value": {"points": 5, "polygonlabels": ["RBC"]}, "original_width": SIZE},
        {"type": "rectanglelabels", "original_width": SIZE, "original_height": SIZE,
         "value": {"x": 50, "y": 50, "width": 25, "height": 25, "rectanglelabels": ["WBC"]}},
    ]  # fmt: skip
    tasks = [
        {"id": 9, "data": {"image": f"/data/upload/1/{rbc[0].name}"}, "annotations": [{"result": bad}]},
        7,
    ]
    (ls / "export.json").write_text(json.dumps(tasks))
    data = read_dataset(ls)
    assert _boxes(data) == {rbc[0].name: [("WBC", 208.0, 208.0, 312.0, 312.0)]}
    assert sum("export.json (task 9)" in i.path and i.kind == "malformed" for i in data.issues) == 2
    assert any(i.kind == "unlabelled" for i in data.issues)  # the task that is not an object

    oi = tmp_path / "oi"
    oi.mkdir()
    shutil.copy(rbc[0], oi / f"{rbc[0].stem}.jpg")
    (oi / "boxes.csv").write_text(
        "ImageID,LabelName,XMin,XMax,YMin,YMax\n"
        f"{rbc[0].stem},cell,abc,0.5,0,0.5\n{rbc[0].stem},cell,0,0.5,0,0.5\n"
    )
    data = read_dataset(oi)
    assert _boxes(data) == {rbc[0].name: [("cell", 0.0, 0.0, 208.0, 208.0)]}
    assert any("boxes.csv" in i.path for i in data.issues)
