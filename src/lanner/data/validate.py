"""Box validation and normalisation shared by every detection reader (and small helpers for writers).

Readers only parse their files: for each image they hand a :class:`DetectionBuilder` the image
path, the boxes as (class name, xyxy pixels, crowd flag), and the image size the annotation
claims. The builder does the rest the same way for every format, logging each change as an
:class:`Issue` naming the file and the reason:

* image missing or unreadable -> image ``skipped``
* annotated size differs from the real (EXIF-upright) size -> ``kept``, the real size is used
* NaN/inf or degenerate (zero-area) boxes -> ``dropped``
* xmin > xmax or ymin > ymax -> corners swapped, ``fixed``
* boxes reaching outside the image -> clipped, ``fixed``
* exact duplicate boxes -> ``dropped``
* class names not in a declared class list -> ``dropped`` (or a :class:`DataError`)
* an image path outside the dataset root (see :mod:`lanner.data.paths`) -> image ``skipped``,
  never opened

Values read from annotation files are untrusted: the typed accessors at the end of this module
(:func:`finite_number`, :func:`integer_id`, :func:`text_value`, :func:`dict_entries`,
:func:`load_json`, :func:`read_text`) turn strings, NaN, infinities, wrong types and missing keys
into ``None`` or a :class:`DataError` naming the file, so no reader ever crashes on them.

Image sizes come from :func:`image_size`, which reads headers only, so reading never decodes pixels.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lanner.data.images import image_size, is_image_file
from lanner.data.paths import Confinement, dataset_root, is_file
from lanner.data.records import SPLIT_ALIASES, Dataset, ImageRecord, Issue, canonical_split
from lanner.errors import DataError

# Labelme conventions, met in its VOC/COCO exports too: ``__ignore__`` marks regions that count
# neither as hits nor misses, ``_background_`` is the segmentation background and never a class.
IGNORE_LABEL = "__ignore__"
BACKGROUND_LABEL = "_background_"
SPECIAL_LABELS = (IGNORE_LABEL, BACKGROUND_LABEL)

# Issue kinds that only describe a harmless, deliberate change; they do not fail ``strict=True``.
INFO_KINDS = frozenset({"category"})

# Boxes poking out of the image by less than this (pixels) are clipped without a note: that is the
# rounding of formats with limited precision (YOLO's 6 decimals), not an annotation mistake.
ROUNDING_TOLERANCE = 0.01


@dataclass
class RawBox:
    """One box as a reader found it, before validation. ``xyxy`` may be in any corner order."""

    label: str
    xyxy: Sequence[float]
    iscrowd: bool = False


@dataclass
class _PendingImage:
    path: Path
    width: int
    height: int
    names: list[str]
    boxes: list[tuple[float, float, float, float]]
    iscrowd: list[bool]
    ignore: list[tuple[float, float, float, float]]
    split: str | None
    image_id: int | None


@dataclass
class DetectionBuilder:
    """Collects images and boxes from one reader, validates them, and builds the :class:`Dataset`.

    ``classes`` is the declared class list (COCO categories, YOLO names, a classes.txt, or the
    user's ``classes=``); when None the classes are the sorted names met. ``on_unknown_class`` is
    ``"drop"`` or ``"error"``. With ``strict=True`` any problem raises a DataError listing all.
    """

    format: str
    root: Path
    classes: list[str] | None = None
    strict: bool = False
    on_unknown_class: str = "drop"
    issues: list[Issue] = field(default_factory=list)
    within: Confinement | None = None  # where images may be opened from; default: ``root``'s
    _pending: list[_PendingImage] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.within is None:
            self.within = Confinement(dataset_root(self.root))
        self.set_classes(self.classes)
        if self.on_unknown_class not in ("drop", "error"):
            raise DataError(f"on_unknown_class must be 'drop' or 'error', not {self.on_unknown_class!r}")

    def set_classes(self, classes: list[str] | None) -> None:
        """Declare the class list once the reader has found it (special labels are not classes)."""
        self.classes = None if classes is None else [c for c in classes if c not in SPECIAL_LABELS]

    def note(self, path: str | Path, problem: str, action: str, kind: str) -> None:
        self.issues.append(Issue(str(path), problem, action, kind))

    def admit(self, path: Path | None, source: str | Path) -> bool:
        """False (and an issue naming ``source`` and ``path``) when ``path`` lies outside the root."""
        if path is None or self.within.contains(path):
            return True
        self.note(source, self.within.refusal(path), "skipped", "outside_root")
        return False

    def add_image(
        self,
        image: Path | None,
        boxes: Iterable[RawBox],
        *,
        source: str | Path,
        annotated_size: tuple[float, float] | None = None,
        split: str | None = None,
        image_id: int | None = None,
        inline: bool = False,
    ) -> bool:
        """Validate one image's annotations; returns False when the image had to be skipped.

        ``source`` is the annotation file (or file:line) named in issues; ``image`` None means the
        reader could not find the image file at all. ``image`` is opened only when it lies inside
        the dataset root, unless ``inline``: a file lanner itself decoded out of the annotation
        (Labelme ``imageData``), which names no file on disk.
        """
        if not (inline or self.admit(image, source)):
            return False
        size = self._real_size(image, source)
        if size is None:
            return False
        width, height = size
        if annotated_size is not None:
            self._check_annotated_size(source, annotated_size, size)
        pending = _PendingImage(image, width, height, [], [], [], [], split, image_id)
        seen: set[tuple[str, tuple[float, ...], bool]] = set()
        for box in boxes:
            xyxy = self._clean_box(box, source, width, height)
            if xyxy is None:
                continue
            if box.label == IGNORE_LABEL:
                pending.ignore.append(xyxy)
                continue
            if not self._known_class(box.label, source):
                continue
            key = (box.label, xyxy, bool(box.iscrowd))
            if key in seen:
                self.note(source, f"duplicate {box.label!r} box {_fmt_box(xyxy)}", "dropped", "duplicate")
                continue
            seen.add(key)
            pending.names.append(box.label)
            pending.boxes.append(xyxy)
            pending.iscrowd.append(bool(box.iscrowd))
        self._pending.append(pending)
        return True

    def build(self) -> Dataset:
        classes = self.classes
        if classes is None:
            classes = sorted({n for p in self._pending for n in p.names})
        index = {name: i for i, name in enumerate(classes)}
        records = [_to_record(p, index) for p in self._pending]
        problems = [i for i in self.issues if i.kind not in INFO_KINDS]
        if self.strict and problems:
            listing = "\n  ".join(str(i) for i in problems)
            raise DataError(f"{self.root}: {len(problems)} problem(s) in the annotations:\n  {listing}")
        return Dataset(classes, records, "detect", self.root, self.format, self.issues)

    # -- the individual checks -------------------------------------------------------------------

    def _real_size(self, image: Path | None, source: str | Path) -> tuple[int, int] | None:
        if image is None or not is_file(image):
            where = f" ({image})" if image is not None else ""
            self.note(source, f"image file not found{where}", "skipped", "image")
            return None
        try:
            return image_size(image)
        except DataError as e:
            self.note(source, f"unreadable image: {e}", "skipped", "image")
            return None

    def _check_annotated_size(self, source, annotated: tuple[Any, Any], real: tuple[int, int]) -> None:
        aw, ah = (finite_number(v) for v in annotated)
        if aw is None or ah is None:
            return  # no usable claim (missing, text, NaN/inf): the real size is used anyway
        aw, ah = int(round(aw)), int(round(ah))
        # A size of 0 is a common "unknown" placeholder (e.g. VOC written by some tools), not a lie.
        if aw <= 0 or ah <= 0 or (aw, ah) == tuple(real):
            return
        problem = f"annotation says {aw}x{ah} but the image is {real[0]}x{real[1]}; using the real size"
        self.note(source, problem, "kept", "size")

    def _clean_box(self, box: RawBox, source, width: int, height: int) -> tuple[float, ...] | None:
        values = number_list(box.xyxy)
        if values is None or len(values) != 4:
            self.note(source, f"{box.label!r} box {short_repr(box.xyxy)} is not 4 numbers", "dropped", "box")
            return None
        x1, y1, x2, y2 = values
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            self.note(source, f"{box.label!r} box has NaN/inf coordinates", "dropped", "box")
            return None
        if x1 > x2 or y1 > y2:
            self.note(
                source,
                f"{box.label!r} box {_fmt_box((x1, y1, x2, y2))} has min > max; swapped",
                "fixed",
                "box",
            )
            x1, x2 = min(x1, x2), max(x1, x2)
            y1, y2 = min(y1, y2), max(y1, y2)
        clipped = (
            min(max(x1, 0.0), width),
            min(max(y1, 0.0), height),
            min(max(x2, 0.0), width),
            min(max(y2, 0.0), height),
        )
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            self.note(
                source,
                f"{box.label!r} box {_fmt_box((x1, y1, x2, y2))} has zero area "
                f"inside the {width}x{height} image",
                "dropped",
                "box",
            )
            return None
        overshoot = max(abs(a - b) for a, b in zip(clipped, (x1, y1, x2, y2), strict=True))
        if overshoot > ROUNDING_TOLERANCE:
            self.note(
                source,
                f"{box.label!r} box {_fmt_box((x1, y1, x2, y2))} reaches outside the "
                f"{width}x{height} image; clipped",
                "fixed",
                "box",
            )
        # Round through float32 so duplicate detection compares what the record will hold.
        return tuple(float(v) for v in np.asarray(clipped, dtype=np.float32))

    def _known_class(self, name: str, source) -> bool:
        if self.classes is None and name != BACKGROUND_LABEL:
            return True
        if self.classes is not None and name in self.classes:
            return True
        problem = f"unknown class {name!r}" + (
            f" (known: {', '.join(self.classes)})" if self.classes is not None else ""
        )
        if self.on_unknown_class == "error":
            raise DataError(f"{source}: {problem}")
        self.note(source, problem, "dropped", "class")
        return False


def _to_record(p: _PendingImage, index: dict[str, int]) -> ImageRecord:
    boxes = np.asarray(p.boxes, dtype=np.float32).reshape(-1, 4)
    return ImageRecord(
        path=p.path,
        width=p.width,
        height=p.height,
        boxes=boxes,
        labels=np.asarray([index[n] for n in p.names], dtype=np.int64),
        iscrowd=np.asarray(p.iscrowd, dtype=bool),
        ignore=np.asarray(p.ignore, dtype=np.float32).reshape(-1, 4),
        split=p.split,
        image_id=p.image_id,
    )


def _fmt_box(xyxy: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in xyxy) + "]"


def bounding_box(points: Iterable[Sequence[float]]) -> tuple[float, float, float, float] | None:
    """The xyxy box around a list of (x, y) points; None when there are no points."""
    pts = np.asarray([[float(p[0]), float(p[1])] for p in points], dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return None
    (x1, y1), (x2, y2) = pts.min(axis=0), pts.max(axis=0)
    return float(x1), float(y1), float(x2), float(y2)


# -- helpers readers share for finding files ------------------------------------------------------


def resolve_image(
    name: str, search_dirs: Iterable[Path], stem_fallback: bool = False, *, within: Confinement
) -> Path | None:
    """The first existing file ``name`` (a relative or absolute path) under any of ``search_dirs``.

    Windows separators are normalised because annotation tools on Windows write them. With
    ``stem_fallback`` an image with the same stem but another extension also counts (exports that
    re-encode PNG to JPG but keep the old file name). Files inside ``within``'s root win; a file
    found only outside it is returned (never opened here) so that the builder refuses it by name.
    """
    outside = None
    for path in _image_candidates(name, [Path(d) for d in search_dirs], stem_fallback):
        if not is_file(path):
            continue
        if within.contains(path):
            return path
        outside = outside or path
    return outside


def _image_candidates(name: str, dirs: list[Path], stem_fallback: bool) -> Iterator[Path]:
    candidate = Path(name.replace("\\", "/").strip())
    if candidate.is_absolute():
        yield candidate
    for rel in (candidate, Path(candidate.name)):
        for d in dirs:
            yield d / rel
    if stem_fallback:
        for d in dirs:
            yield from (p for p in sorted(d.glob(f"{glob_escape(candidate.stem)}.*")) if is_image_file(p))


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def read_class_file(path: Path) -> list[str] | None:
    """Class names one per line (classes.txt, labels.txt, class_names.txt), minus special labels."""
    if not path.is_file():
        return None
    lines = [ln.strip() for ln in read_text(path).splitlines()]
    return [ln for ln in lines if ln and ln not in SPECIAL_LABELS]


# -- helpers writers share -----------------------------------------------------------------------


def place_image(src: Path, dest_dir: Path, taken: set[str]) -> Path:
    """Hard-link (or copy) ``src`` into ``dest_dir`` under a name not in ``taken``; returns the copy.

    Stems must be unique within a folder, since label files are named after them (``a.jpg`` and
    ``a.png`` would share ``a.txt``), and merged datasets often repeat names.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    name, n = src.name, 1
    while Path(name).stem.lower() in taken:
        name = f"{src.stem}_{n}{src.suffix}"
        n += 1
    taken.add(Path(name).stem.lower())
    dest = dest_dir / name
    if dest.exists():
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)
    return dest


def require_detection(dataset: Dataset, fmt: str) -> None:
    if dataset.task != "detect":
        raise DataError(f"{fmt} holds detection annotations; this dataset is {dataset.task!r}")


def format_number(value: float, decimals: int) -> str:
    """``value`` rounded to ``decimals``, without trailing zeros (``81`` not ``81.000000``)."""
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def label_names(dataset: Dataset, record: ImageRecord) -> list[str]:
    return [dataset.classes[int(i)] for i in record.labels]


def split_from_path(path: Path, root: Path) -> str | None:
    """The split named by the nearest folder between ``root`` and ``path`` (``valid`` -> ``val``)."""
    try:
        parts = path.relative_to(root).parts[:-1]
    except ValueError:
        return None
    for part in reversed(parts):
        if part.lower() in SPLIT_ALIASES:
            return canonical_split(part)
    return None


# -- typed accessors for untrusted annotation values ----------------------------------------------


def finite_number(value: Any) -> float | None:
    """``value`` as a finite float (numbers and numeric text); None for anything else.

    Booleans are refused: ``true`` in a bbox is a broken file, not the number 1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: an int too large for a float
        return None
    return number if math.isfinite(number) else None


def number_list(values: Any) -> list[float] | None:
    """A list or tuple of numbers as floats (NaN/inf kept, so the caller can say so); else None."""
    if not isinstance(values, (list, tuple, np.ndarray)):
        return None
    numbers = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, str, np.number)):
            return None
        try:
            numbers.append(float(v))
        except (ValueError, OverflowError):
            return None
    return numbers


def integer_id(value: Any) -> int | None:
    """An id (category, image, class index) as an int: whole numbers only, never bool, NaN or inf."""
    number = finite_number(value)
    if number is None or not number.is_integer():
        return None
    return int(number)


def text_value(value: Any) -> str | None:
    """A non-empty string (numbers are accepted as their text: class names like ``7``); else None."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def dict_entries(data: dict, key: str) -> list | None:
    """``data[key]`` when it is a list (its items still need checking), [] when absent, else None."""
    value = data.get(key, [])
    return value if isinstance(value, list) else None


def read_text(path: Path, encoding: str = "utf-8-sig") -> str:
    """The text of an annotation file; a DataError naming the file for I/O and encoding errors."""
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e


def read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Lower-cased header and (line number, row) pairs with stripped values; DataError naming the file.

    Cells beyond the header (csv's ``None`` key) are left out; missing cells read as "".
    """
    text = read_text(path)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        reader.fieldnames = [h.strip().lower() for h in reader.fieldnames or []]
        rows = [
            (
                line,
                {k: (v or "").strip() for k, v in row.items() if isinstance(k, str) and isinstance(v, str)},
            )
            for line, row in enumerate(reader, start=2)
        ]
    except csv.Error as e:  # NUL bytes, a field over csv's size limit
        raise DataError(f"{path}: not a readable CSV ({e})") from e
    return list(reader.fieldnames), rows


def load_json(path: Path, what: str) -> Any:
    """Parsed JSON of ``path``; a DataError naming the file when it is unreadable or not JSON."""
    text = read_text(path)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise DataError(f"{path}: not a readable {what} JSON ({type(e).__name__}: {e})") from e


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr`` of an untrusted value, cut short so one broken entry cannot flood the issue list."""
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
