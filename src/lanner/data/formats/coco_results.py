"""COCO *results*: the detections list that pycocotools' ``COCO.loadRes`` and the COCO evaluation
server take, ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``.

Write only (it holds no images and no class names). Image ids are the records' positions, as the
``coco`` writer numbers the images of a ``.json`` file, and category ids start at 1 as it numbers
the classes, so the results evaluate against ``coco.json`` written from the same dataset (``lanner
predict --format coco`` writes both). Boxes without a score (annotations, not predictions) get 1.
Coordinates are written to 3 decimals.
"""

from __future__ import annotations

from pathlib import Path

from lanner._io import write_json
from lanner.data.formats import Format, register_format
from lanner.data.records import Dataset
from lanner.data.validate import require_detection
from lanner.errors import DataError

RESULTS_FILE = "coco_results.json"


def sniff(path: Path) -> bool:
    return False  # results name no images: never a dataset to read


def read(path: Path, **_) -> Dataset:
    raise DataError(f"{path}: a COCO results file holds no images or classes; read the COCO dataset instead")


def results(dataset: Dataset) -> list[dict]:
    found = []
    for image_id, rec in enumerate(dataset.records):
        scores = rec.scores.tolist() if rec.scores is not None else [1.0] * rec.num_boxes
        for (x1, y1, x2, y2), label, score in zip(
            rec.boxes.tolist(), rec.labels.tolist(), scores, strict=True
        ):
            bbox = [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)]
            found.append(
                {"image_id": image_id, "category_id": int(label) + 1, "bbox": bbox, "score": round(score, 5)}
            )
    return found


def write(dataset: Dataset, out: Path) -> None:
    require_detection(dataset, "COCO results")
    target = out if out.suffix.lower() == ".json" else out / RESULTS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json(target, results(dataset))


register_format(
    Format("coco_results", sniff, read, write, priority=99, keeps_crowd=False, keeps_ignore=False)
)
