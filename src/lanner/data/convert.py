"""Convert a dataset between annotation formats: read (validating) into a Dataset, write it out.

Boxes survive a conversion to the precision the target format keeps (YOLO 6 decimals of the
image size, COCO 3 decimals, CSV and Labelme 2, VOC 1); what a format cannot express is dropped,
never turned into something else: crowd boxes in YOLO, CSV and Labelme (VOC keeps them as
``difficult``), ignore regions in COCO and YOLO. Each such loss is appended to the dataset's
``issues`` (kind ``lost``) next to the issues met while reading.
"""

from __future__ import annotations

from pathlib import Path

from lanner.data.formats import read_dataset, write_dataset
from lanner.errors import DataError

# Names people use for a format -> the registered format, per task. "csv" is one name for two
# formats: the classification CSV and the detection (box) CSV.
FORMAT_ALIASES = {
    "detect": {
        "csv": "csv_boxes",
        "yolov5": "yolo",
        "yolov8": "yolo",
        "ultralytics": "yolo",
        "pascal_voc": "voc",
        "pascal-voc": "voc",
        "json": "coco",
        "labelstudio": "label_studio",
        "label-studio": "label_studio",
        "openimages": "open_images",
        "open-images": "open_images",
        "coco-results": "coco_results",
    },
    "classify": {"csv_boxes": "csv"},
}


def target_format(to: str, task: str) -> str:
    """The registered format to write for ``to`` given the dataset's task (``csv`` + detect -> csv_boxes)."""
    name = to.strip().lower()
    return FORMAT_ALIASES.get(task, {}).get(name, name)


def convert(
    src: str | Path, to: str, out: str | Path, *, src_format: str | None = None, **read_kwargs
) -> Path:
    """Read ``src`` (format auto-detected unless ``src_format``) and write it as ``to`` into ``out``.

    ``read_kwargs`` go to the reader (``strict=True``, ``classes=[...]``, ...). Returns ``out``.
    """
    dataset = read_dataset(src, format=src_format, **read_kwargs)
    return convert_dataset(dataset, to, out, src)


def convert_dataset(dataset, to: str, out: str | Path, src: str | Path) -> Path:
    """Write an already-read dataset as ``to``; refuses to overwrite its own source."""
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve():
        raise DataError(f"{out}: converting a dataset onto itself would overwrite its annotations")
    if not dataset.records:
        raise DataError(f"{src}: no readable images to convert")
    return write_dataset(dataset, target_format(to, dataset.task), out)
