"""Open Images box CSVs: ``ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,
IsTruncated,IsGroupOf,IsDepiction,IsInside``, coordinates normalised to [0, 1].

Read: one CSV, or every such CSV in a folder, the split from its name (``train-annotations-bbox.csv``,
``validation-...``, ``test-...``). ``LabelName`` is a machine id (``/m/01g317``) named by the class
descriptions CSV beside it (``class-descriptions-boxable.csv``, ``oidv7-class-descriptions-boxable.csv``
or ``oidv6-class-descriptions.csv``: ``LabelName,DisplayName``, with or without that header); without
one the ids are the class names. The classes are those met in the boxes (the descriptions list all
600), or ``classes=``. The image of ``ImageID`` is ``<ImageID>.<any image extension>`` beside the
CSV, in ``images/``, or in the split's folder (``train/``, ``validation/``, ``test/``); its size (read
from the header only) turns the coordinates into pixels. ``IsGroupOf=1`` boxes are crowd boxes (neither
a hit nor a miss, as Open Images' own evaluation counts them); rows with ``Confidence`` 0 are verified
*absences* and not boxes.

Write: ``[split-]annotations-bbox.csv`` (images without boxes are not listed) with the images copied
into ``images/`` (ImageID = file stem), ``LabelName`` = the class name, ``Confidence`` = the model's
score for predictions (else 1), and
``class-descriptions-boxable.csv`` naming each class. Coordinates are written to 6 decimals.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lanner._io import write_text
from lanner.data.formats import Format, register_format
from lanner.data.images import image_size
from lanner.data.paths import Confinement
from lanner.data.records import Dataset, canonical_split
from lanner.data.validate import (
    DetectionBuilder,
    RawBox,
    format_number,
    label_names,
    number_list,
    place_image,
    read_csv,
    require_detection,
    resolve_image,
)
from lanner.errors import DataError

NEEDED = ("imageid", "labelname", "xmin", "xmax", "ymin", "ymax")
COLUMNS = ["ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax", "IsGroupOf"]
ANNOTATION_SUFFIX = "annotations-bbox.csv"
DESCRIPTIONS = ("class-descriptions-boxable.csv", "oidv7-class-descriptions-boxable.csv",
                "oidv6-class-descriptions.csv", "class-descriptions.csv")  # fmt: skip
SPLIT_FOLDERS = {"train": "train", "val": "validation", "test": "test"}


def _is_box_csv(path: Path) -> bool:
    """Whether the header (read alone: these files run to gigabytes) has Open Images' box columns."""
    if path.suffix.lower() != ".csv":
        return False
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            header = [h.strip().lower() for h in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return all(c in header for c in NEEDED)


def _box_csvs(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if _is_box_csv(path) else []
    return [f for f in sorted(path.glob("*.csv")) if _is_box_csv(f)] if path.is_dir() else []


def sniff(path: Path) -> bool:
    return bool(_box_csvs(path))


def _split_of(csv_path: Path) -> str | None:
    """``train-annotations-bbox.csv`` -> train, ``validation-...`` -> val; None for other names."""
    first = csv_path.stem.replace("_", "-").split("-", 1)[0]
    split = canonical_split(first)
    return split if split in SPLIT_FOLDERS else None


def _descriptions(folder: Path) -> dict[str, str]:
    """Machine id -> display name, from the class descriptions CSV in ``folder`` ({} when none)."""
    found = next((folder / n for n in DESCRIPTIONS if (folder / n).is_file()), None)
    if found is None:
        return {}
    try:
        rows = list(csv.reader(io.StringIO(found.read_text(encoding="utf-8-sig"), newline="")))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{found}: not a readable class descriptions CSV ({e})") from e
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["labelname", "displayname"]:
        rows = rows[1:]
    return {r[0].strip(): r[1].strip() for r in rows if len(r) >= 2 and r[0].strip()}


def _rows_by_image(csv_path: Path, names: dict[str, str]) -> dict[str, list[tuple[int, dict, str]]]:
    images: dict[str, list] = {}
    for lineno, row in read_csv(csv_path)[1]:
        if not row.get("imageid"):
            raise DataError(f"{csv_path}:{lineno}: empty ImageID")
        if row.get("confidence", "1") in ("0", "0.0"):
            continue  # a verified absence of the class, not a box
        label = names.get(row.get("labelname", ""), row.get("labelname", ""))
        images.setdefault(row["imageid"], []).append((lineno, row, label))
    return images


def _pixel_boxes(rows: list[tuple[int, dict, str]], size: tuple[int, int] | None) -> list[RawBox]:
    """Normalised rows -> boxes in pixels (NaN coordinates, kept for the builder to report, when the
    image or a number is missing)."""
    w, h = size or (float("nan"), float("nan"))
    boxes = []
    for _, row, label in rows:
        coords = number_list([row.get(c) or "nan" for c in ("xmin", "xmax", "ymin", "ymax")])
        x1, x2, y1, y2 = coords or [float("nan")] * 4  # text that is no number: reported by the builder
        crowd = row.get("isgroupof") == "1"
        boxes.append(RawBox(label, (x1 * w, y1 * h, x2 * w, y2 * h), crowd))
    return boxes


def _size(image: Path | None, within: Confinement) -> tuple[int, int] | None:
    """The image's size when it may be opened and can be (else the builder reports why not)."""
    if image is None or not within.contains(image):
        return None
    try:
        return image_size(image)
    except (DataError, OSError):
        return None


def _read_csv_file(
    csv_path: Path, names: dict[str, str], builder: DetectionBuilder, within: Confinement
) -> None:
    split = _split_of(csv_path)
    base = csv_path.parent
    search = [base, base / "images", *([base / SPLIT_FOLDERS[split]] if split else [])]
    for image_id, rows in _rows_by_image(csv_path, names).items():
        image = resolve_image(image_id, search, stem_fallback=True, within=within)
        builder.add_image(
            image,
            _pixel_boxes(rows, _size(image, within)),
            source=f"{csv_path}:{rows[0][0]}",
            split=split,
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
    files = _box_csvs(path)
    if not files:
        raise DataError(
            f"{path}: not an Open Images box CSV (needs ImageID, LabelName, XMin, XMax, YMin, YMax)"
        )
    root = path if path.is_dir() else path.parent
    within = Confinement.of(path, allow_outside_root)
    names = _descriptions(root)
    declared = classes  # not the descriptions: they name all 600 classes of Open Images
    builder = DetectionBuilder("open_images", root, declared, strict, on_unknown_class, within=within)
    for csv_path in files:
        _read_csv_file(csv_path, names, builder, within)
    return builder.build()


# ------------------------------------------------------------------------------------------ write
def _rows(dataset: Dataset, rec, image_id: str) -> list[list[str]]:
    scores = rec.scores.tolist() if rec.scores is not None else [None] * rec.num_boxes
    labelled = zip(label_names(dataset, rec), rec.boxes.tolist(), rec.iscrowd.tolist(), scores, strict=True)
    rows = []
    for name, (x1, y1, x2, y2), crowd, score in labelled:
        coords = [x1 / rec.width, x2 / rec.width, y1 / rec.height, y2 / rec.height]
        source, confidence = ("lanner", format_number(score, 4)) if score is not None else ("human", "1")
        rows.append(
            [image_id, source, name, confidence, *(format_number(v, 6) for v in coords), str(int(crowd))]
        )
    return rows


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue()


def write(dataset: Dataset, out: Path) -> None:
    require_detection(dataset, "Open Images CSV")
    groups: dict[str | None, list[list[str]]] = {}
    taken: set[str] = set()
    for rec in dataset.records:
        image = place_image(rec.path, out / "images", taken)
        groups.setdefault(rec.split, []).extend(_rows(dataset, rec, image.stem))
    for split, rows in groups.items():
        prefix = f"{SPLIT_FOLDERS.get(split, split)}-" if split else ""
        write_text(out / f"{prefix}{ANNOTATION_SUFFIX}", _csv_text(rows))
    write_text(out / DESCRIPTIONS[0], _csv_text_plain([[c, c] for c in dataset.classes]))


def _csv_text_plain(rows: list[list[str]]) -> str:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


# Before the detection CSV (38), whose sniffer would take XMin..YMax for its xmin..ymax.
register_format(Format("open_images", sniff, read, write, priority=36, keeps_ignore=False))
