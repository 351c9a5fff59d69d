"""Label Studio JSON: the project export "JSON" (a list of tasks), and pre-annotations to import.

Read: each task's ``data`` names its image; its boxes are the ``rectanglelabels`` (and
``polygonlabels``, as the box around the points) results of the latest annotation that was not
cancelled, in percent of the image (``value.x/y/width/height``, rotated about the top-left corner by
``value.rotation`` degrees). A task nobody annotated is left out, with an issue; a file in which no
task is annotated (pre-annotations, as written here) is read from its latest predictions. Image references as
Label Studio writes them are looked up by file name under the JSON's folder (and ``images/``):
``/data/local-files/?d=sub/a.jpg`` (local storage) by its ``d`` path, ``/data/upload/3/8f2a9c1e-a.jpg``
(uploads, prefixed with a hash) as ``a.jpg``, URLs by their last part; every file must lie inside the
dataset root (:mod:`lanner.data.paths`).

Write: the tasks as a JSON list. Boxes that carry a model's scores (predictions) go into
``predictions`` with a ``score`` each (Label Studio's pre-annotations: import the file, then correct
the boxes), others into ``annotations``. Images are named ``/data/local-files/?d=PATH``: when ``out``
is a folder the images are copied into ``out/images/`` and PATH is relative to ``out`` (serve it as
Label Studio's local-files document root); a ``.json`` path names the images relative to its folder.
``labeling_config.xml`` beside the JSON is the project's labeling interface for these classes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse
from xml.sax.saxutils import quoteattr

from lanner._io import write_json, write_text
from lanner.data.formats import Format, register_format
from lanner.data.paths import Confinement
from lanner.data.records import Dataset
from lanner.data.validate import (
    DetectionBuilder,
    RawBox,
    bounding_box,
    finite_number,
    label_names,
    load_json,
    number_list,
    place_image,
    require_detection,
    resolve_image,
    short_repr,
    text_value,
)
from lanner.errors import DataError

TASKS_FILE = "tasks.json"
CONFIG_FILE = "labeling_config.xml"
FROM_NAME, TO_NAME = "label", "image"  # the control and object tags of the labeling config written
BOX_TYPES = ("rectanglelabels", "polygonlabels")
LOCAL_FILES = "/data/local-files/?d="
UPLOAD_PREFIX = 9  # "8f2a9c1e-": the hash Label Studio puts before an uploaded file's name
MAX_SNIFF_FILES = 20


def _load_tasks(path: Path) -> list | None:
    """The parsed JSON when it is a Label Studio export (a list of tasks with ``data``), else None."""
    try:
        data = load_json(path, "Label Studio")
    except DataError:
        return None
    if (
        isinstance(data, list)
        and data
        and isinstance(data[0], dict)
        and isinstance(data[0].get("data"), dict)
    ):
        return data if ("annotations" in data[0] or "predictions" in data[0]) else None
    return None


def _json_file(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix.lower() == ".json" and _load_tasks(path) is not None else None
    if not path.is_dir():
        return None
    return next((f for f in sorted(path.glob("*.json"))[:MAX_SNIFF_FILES] if _load_tasks(f)), None)


def sniff(path: Path) -> bool:
    return _json_file(path) is not None


def image_names(reference: str) -> list[str]:
    """The file names to look for, best first, for an image reference Label Studio wrote."""
    url = urlparse(reference)
    if url.path.endswith("/data/local-files/") or "d" in parse_qs(url.query):
        return [unquote(parse_qs(url.query).get("d", [""])[0])]
    name = unquote(url.path.rstrip("/").rsplit("/", 1)[-1])
    uploaded = "/data/upload/" in url.path and len(name) > UPLOAD_PREFIX and name[UPLOAD_PREFIX - 1] == "-"
    return [name[UPLOAD_PREFIX:], name] if uploaded else [name]


def _rotated_box(v: dict) -> list[float] | None:
    """xyxy in percent of a rectangle rotated ``rotation`` degrees clockwise about its top-left corner."""
    x, y, w, h = (finite_number(v.get(k)) for k in ("x", "y", "width", "height"))
    if None in (x, y, w, h):
        return None
    turn = math.radians(finite_number(v.get("rotation")) or 0.0)
    cos, sin = math.cos(turn), math.sin(turn)
    corners = [
        (x + dx * cos - dy * sin, y + dx * sin + dy * cos) for dx, dy in ((0, 0), (w, 0), (0, h), (w, h))
    ]
    return list(bounding_box(corners))


def _result_box(result: dict) -> tuple[str, list[float] | None, tuple | None]:
    """(label, xyxy in pixels or None, the image size it claims) for one box result."""
    v = result.get("value") if isinstance(result.get("value"), dict) else {}
    names = v.get(result.get("type")) or v.get("labels") or []
    label = text_value(names[0]) if isinstance(names, list) and names else None
    size = number_list([result.get("original_width"), result.get("original_height")])
    if result.get("type") == "polygonlabels":
        raw = v.get("points") if isinstance(v.get("points"), list) else []
        points = number_list([c for p in raw if isinstance(p, list) for c in p])
        box = list(bounding_box(zip(points[::2], points[1::2], strict=True))) if points else None
    else:
        box = _rotated_box(v)
    if box is None or size is None:
        return label or "", None, None
    w, h = size
    return label or "", [box[0] * w / 100, box[1] * h / 100, box[2] * w / 100, box[3] * h / 100], tuple(size)


def _annotation(task: dict, key: str = "annotations") -> dict | None:
    """The latest annotation (or prediction) that was not cancelled, or None."""
    entries = task.get(key) if isinstance(task.get(key), list) else []
    kept = [a for a in entries if isinstance(a, dict) and not a.get("was_cancelled")]
    return kept[-1] if kept else None


def _source(tasks: list) -> str:
    """ "annotations"; "predictions" for a file of pre-annotations (no task annotated at all)."""
    annotated = any(isinstance(t, dict) and t.get("annotations") for t in tasks)
    return "annotations" if annotated or not tasks else "predictions"


def _boxes(results: list, where: str, builder: DetectionBuilder) -> tuple[list[RawBox], tuple | None]:
    boxes, size = [], None
    for index, result in enumerate(results if isinstance(results, list) else []):
        if not isinstance(result, dict) or result.get("type") not in BOX_TYPES:
            continue  # choices, text areas, key points: not boxes
        label, box, claimed = _result_box(result)
        if box is None:
            problem = f"result {index} has no usable box or original size: {short_repr(result.get('value'))}"
            builder.note(where, problem, "dropped", "malformed")
            continue
        boxes.append(RawBox(label, box))
        size = size or claimed
    return boxes, size


def _image_reference(task: dict) -> str | None:
    data = task["data"]
    return text_value(data.get("image")) or next(
        (text_value(v) for v in data.values() if text_value(v)), None
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
    json_path = _json_file(path)
    if json_path is None:
        raise DataError(
            f"{path}: not a Label Studio JSON export (a list of tasks with 'data' and 'annotations')"
        )
    base, within = json_path.parent, Confinement.of(path, allow_outside_root)
    builder = DetectionBuilder("label_studio", base, classes, strict, on_unknown_class, within=within)
    tasks = _load_tasks(json_path)
    key = _source(tasks)
    for index, task in enumerate(tasks):
        where = f"{json_path} (task {task.get('id', index) if isinstance(task, dict) else index})"
        valid = isinstance(task, dict) and isinstance(task.get("data"), dict)
        reference = _image_reference(task) if valid else None
        annotation = _annotation(task, key) if reference else None
        if annotation is None:
            builder.note(where, f"no image or no {key[:-1]} (not labelled yet)", "skipped", "unlabelled")
            continue
        boxes, size = _boxes(annotation.get("result"), where, builder)
        found = next(
            (
                f
                for n in image_names(reference)
                if (f := resolve_image(n, [base, base / "images"], within=within))
            ),
            None,
        )
        builder.add_image(found, boxes, source=where, annotated_size=size)
    return builder.build()


# ------------------------------------------------------------------------------------------ write
def _result(label: str, box: list[float], rec, index: int, score: float | None) -> dict:
    x1, y1, x2, y2 = box
    w, h = rec.width, rec.height
    value = {
        "x": round(100 * x1 / w, 4), "y": round(100 * y1 / h, 4),
        "width": round(100 * (x2 - x1) / w, 4), "height": round(100 * (y2 - y1) / h, 4),
        "rotation": 0, "rectanglelabels": [label],
    }  # fmt: skip
    result = {
        "id": f"box{index}", "type": "rectanglelabels", "from_name": FROM_NAME, "to_name": TO_NAME,
        "original_width": w, "original_height": h, "image_rotation": 0, "value": value,
    }  # fmt: skip
    return result if score is None else {**result, "score": round(score, 4)}


def _task(dataset: Dataset, rec, reference: str, model_version: str) -> dict:
    scores = rec.scores.tolist() if rec.scores is not None else [None] * rec.num_boxes
    labelled = zip(label_names(dataset, rec), rec.boxes.tolist(), scores, strict=True)
    results = [_result(n, b, rec, i, s) for i, (n, b, s) in enumerate(labelled)]
    task = {"data": {TO_NAME: reference}}
    if rec.scores is None:
        return {**task, "annotations": [{"result": results}]}
    overall = round(float(rec.scores.mean()), 4) if len(rec.scores) else 0.0
    return {**task, "predictions": [{"model_version": model_version, "score": overall, "result": results}]}


def labeling_config(classes: list[str]) -> str:
    """The labeling interface for boxes of ``classes`` (Settings > Labeling Interface > Code)."""
    labels = "".join(f"    <Label value={quoteattr(c)}/>\n" for c in classes)
    return (
        f'<View>\n  <Image name="{TO_NAME}" value="$image"/>\n'
        f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}  </RectangleLabels>\n</View>\n'
    )


def write(dataset: Dataset, out: Path) -> None:
    require_detection(dataset, "Label Studio JSON")
    single_file = out.suffix.lower() == ".json"
    json_path = out if single_file else out / TASKS_FILE
    json_path.parent.mkdir(parents=True, exist_ok=True)
    version = f"lanner-{dataset.root.name}" if dataset.root else "lanner"
    taken: set[str] = set()
    tasks = []
    for rec in dataset.records:
        if single_file:
            rel = os.path.relpath(rec.path.resolve(), json_path.parent.resolve())
        else:
            rel = place_image(rec.path, out / "images", taken).relative_to(out)
        tasks.append(_task(dataset, rec, LOCAL_FILES + Path(rel).as_posix(), version))
    write_json(json_path, tasks)
    write_text(json_path.parent / CONFIG_FILE, labeling_config(dataset.classes))


register_format(
    Format("label_studio", sniff, read, write, priority=30, keeps_crowd=False, keeps_ignore=False)
)
