"""`lanner predict` for detectors: boxes in full-image pixels, written in a dataset format, optionally drawn.

Predictions become a :class:`Dataset` (one record per image, boxes at or above the run's score
threshold) written by the format writers of :mod:`lanner.data.formats`, so the output opens in
the tools that read that format (Labelme, Ultralytics, COCO viewers) and reads back with
``read_dataset``. CVAT and Label Studio output are pre-annotations carrying each box's score; COCO
output comes with ``coco_results.json`` (the scores as COCO results); every box's score is also
written to ``detections.json``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console

from lanner._io import write_json
from lanner.config import InferenceOptions
from lanner.data.box_transforms import letterbox, load_letterboxed
from lanner.data.detections import Detections
from lanner.data.formats import write_dataset
from lanner.data.images import image_size, open_image
from lanner.data.records import Dataset, ImageRecord
from lanner.errors import ConfigError, DataError
from lanner.predict.inputs import expand_inputs
from lanner.predict.merge import fuse_models
from lanner.predict.results import Detection
from lanner.predict.tiled import score_floor
from lanner.tasks.detect.tiled import detect_stream, resolve_tiling
from lanner.tasks.detect.training import detect_canvases, detect_canvases_tta
from lanner.tasks.loading import LoadedRun
from lanner.tasks.run_thresholds import class_thresholds

FORMATS = ("coco", "csv", "labelme", "yolo", "cvat", "labelstudio")
# lanner's writer name per --format, and the output path under the output folder (file or folder).
# cvat and labelstudio are pre-annotations with the scores, to import and correct in those tools.
WRITERS = {
    "coco": ("coco", "coco.json"),
    "csv": ("csv_boxes", "boxes.csv"),
    "labelme": ("labelme", "labelme"),
    "yolo": ("yolo", "yolo"),
    "cvat": ("cvat", "cvat.xml"),
    "labelstudio": ("label_studio", "labelstudio.json"),
}
SINGLE_FILES = (".json", ".csv", ".xml")  # an --out with one of these is the file itself
RENDER_MAX_SIDE = 1280  # small enough to mail, large enough to judge the boxes
RENDER_QUALITY = 85
PALETTE = [
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
]


def _letterboxed_batches(paths: list[Path], size: int, batch_size: int) -> Iterator[tuple[list, list, dict]]:
    """(readable paths, canvases + sizes, {path: error}) per chunk; unreadable files do not stop the run."""
    for start in range(0, len(paths), batch_size):
        good, loaded, errors = [], [], {}
        for p in paths[start : start + batch_size]:
            try:
                loaded.append(load_letterboxed(p, size))
                good.append(p)
            except DataError as e:
                errors[p] = str(e)
        yield good, loaded, errors


def detect_files(
    loaded: LoadedRun, paths: list[Path], batch_size: int = 8, tiling=None, score_threshold: float = 0.001,
    tta: bool = False,
) -> Iterator[tuple[Path, tuple, object]]:  # fmt: skip
    """Yield (path, (width, height), Detections in full-image pixels) or (path, None, error message).

    Only boxes scoring ``score_threshold`` or more are wanted: the model drops the rest itself.
    ``tta``: see :mod:`lanner.predict.tta` (tiled: the mirror image only).
    """
    with score_floor(loaded.model, score_threshold):
        if tiling is not None:
            yield from _detect_files_tiled(loaded, paths, tiling, score_threshold, tta)
        else:
            yield from _detect_files_whole(loaded, paths, batch_size, tta)


def _detect_files_whole(loaded: LoadedRun, paths: list[Path], batch_size: int, tta: bool) -> Iterator[tuple]:
    size = int(loaded.meta.get("image_size"))
    for good, items, errors in _letterboxed_batches(paths, size, batch_size):
        for p, message in errors.items():
            yield p, None, message
        if not items:
            continue
        canvases = np.stack([c for c, _ in items])  # [B, S, S, 3] uint8
        sizes = np.array([wh for _, wh in items])  # [B, 2] original (width, height)
        for p, wh, det in zip(
            good, sizes, detect_canvases_tta(loaded.model, canvases, sizes, loaded.device, tta), strict=True
        ):
            yield p, (int(wh[0]), int(wh[1])), det


def _detect_files_tiled(
    loaded: LoadedRun, paths: list[Path], tiling, score_threshold: float, tta: bool
) -> Iterator[tuple[Path, tuple, object]]:
    """Tiled inference over all files in one stream (tiles of consecutive files share batches);
    a file that cannot be read is reported in its place and the others still run."""
    failed: dict[Path, str] = {}
    pending = iter(paths)

    def report_until(path) -> Iterator[tuple[Path, None, str]]:
        """Errors of the files before ``path`` (all remaining ones when None), in input order."""
        for p in pending:
            if p == path:
                return
            yield p, None, failed.pop(p, f"{p}: not predicted")

    def note(path, error: DataError) -> None:
        failed[path] = str(error)

    tiling = tiling.for_device(loaded.model, loaded.device)
    for path, det in detect_stream(loaded.model, paths, tiling, loaded.device, score_threshold, note, tta):
        yield from report_until(path)
        yield path, image_size(path), det
    yield from report_until(None)


def detect_images(loaded: LoadedRun, images: list, options: InferenceOptions) -> list[Detection]:
    """Upright RGB images in memory -> one :class:`Detection` each, boxes in the image's own pixels
    (tiled when the run is, or as ``options`` say), at or above each class's threshold (as predict's)."""
    threshold = _thresholds([loaded], options, None)  # [C]
    floor = float(threshold.min(initial=1.0))
    tiling = resolve_tiling(loaded.meta.get("tiling"), **options.tiling_overrides())
    with score_floor(loaded.model, floor):
        if tiling is not None:
            found = [det for _, det in detect_stream(loaded.model, images, tiling, loaded.device, floor)]
        else:
            size = int(loaded.meta.get("image_size"))
            canvases = np.stack([letterbox(img, size) for img in images])  # [N, S, S, 3] uint8
            sizes = np.array([img.size for img in images])  # [N, 2] (width, height)
            found = detect_canvases(loaded.model, canvases, sizes, loaded.device)
    return [_detection(det.above(threshold), loaded.classes) for det in found]


def _detection(det: Detections, classes: list[str]) -> Detection:
    return Detection(det.boxes.astype(np.float32), [classes[int(c)] for c in det.labels], det.scores)


def predictions_dataset(
    classes: list[str], results: list[tuple[Path, tuple, Detections]], score_threshold: float | np.ndarray
) -> Dataset:
    records = []
    for path, (w, h), det in results:
        shown = det.above(score_threshold)
        records.append(
            ImageRecord(
                Path(path),
                w,
                h,
                boxes=shown.boxes.astype(np.float32),
                labels=shown.labels.astype(np.int64),
                iscrowd=np.zeros(len(shown), bool),
                scores=shown.scores.astype(np.float32),
            )
        )
    return Dataset(list(classes), records, "detect", format="predictions")


def write_predictions(dataset: Dataset, fmt: str, out: Path) -> Path:
    """Write in ``fmt``; ``out`` is a folder (default names inside it) or, for coco/csv, the file itself."""
    if fmt not in WRITERS:
        raise ConfigError(f"unknown prediction format {fmt!r}; choose one of {', '.join(FORMATS)}")
    writer, default_name = WRITERS[fmt]
    target = out if out.suffix.lower() in SINGLE_FILES else out / default_name
    written = write_dataset(dataset, writer, target)
    if fmt == "coco":  # and the scores as COCO results, numbered as coco.json numbers its images
        write_dataset(dataset, "coco_results", target.with_name(f"{target.stem}_results.json"))
    return written


def scores_document(classes: list[str], results: list, score_threshold: np.ndarray) -> dict:
    """detections.json: every kept box with its score; ``score_threshold`` [C] per class."""
    images = []
    for path, (w, h), det in results:
        shown = det.above(score_threshold)
        images.append(
            {
                "path": str(path),
                "width": w,
                "height": h,
                "boxes": np.round(shown.boxes, 2).tolist(),
                "scores": np.round(shown.scores, 4).tolist(),
                "labels": [classes[int(c)] for c in shown.labels],
            }
        )
    return {
        "classes": list(classes),
        "score_threshold": float(score_threshold.min(initial=1.0)),
        "class_thresholds": dict(zip(classes, score_threshold.tolist(), strict=True)),
        "images": images,
    }


# ------------------------------------------------------------------------------------------ render
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed-size bitmap font
        return ImageFont.load_default()


def render_image(
    path: Path, det: Detections, classes: list[str], out_dir: Path, captions: list[str] | None = None
) -> Path:
    """Draw boxes with class and score (or ``captions``, one per box) on a copy scaled to RENDER_MAX_SIDE
    (never upscaled); JPEG."""
    img = open_image(path)
    scale = min(1.0, RENDER_MAX_SIDE / max(img.size))
    if scale < 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    font = _font(max(10, round(max(img.size) / 60)))
    line = max(1, round(max(img.size) / 400))
    texts = captions or [f"{classes[int(c)]} {s:.2f}" for s, c in zip(det.scores, det.labels, strict=True)]
    for box, text, label in zip(det.boxes * scale, texts, det.labels, strict=True):
        colour = PALETTE[int(label) % len(PALETTE)]
        x0, y0, x1, y1 = box.tolist()
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
        tx0, ty0, tx1, ty1 = draw.textbbox((x0, y0), text, font=font)
        top = max(0, y0 - (ty1 - ty0) - 2)
        draw.rectangle((x0, top, x0 + tx1 - tx0 + 4, top + ty1 - ty0 + 2), fill=colour)
        draw.text((x0 + 2, top), text, fill="white", font=font)
    target = out_dir / f"{path.stem}.jpg"
    n = 1
    while target.exists():  # two inputs with one name (from different folders) must not overwrite
        n += 1
        target = out_dir / f"{path.stem}-{n}.jpg"
    out_dir.mkdir(parents=True, exist_ok=True)
    img.save(target, "JPEG", quality=RENDER_QUALITY)
    return target


# ----------------------------------------------------------------------------------------- predict
def _row(path: Path, shown: Detections, classes: list[str]) -> dict:
    return {
        "path": str(path),
        "boxes": shown.boxes.tolist(),
        "scores": shown.scores.tolist(),
        "labels": [classes[int(c)] for c in shown.labels],
        "error": "",
    }


def _member_detections(loaded: LoadedRun, paths: list[Path], options: InferenceOptions, threshold: float):
    tiling = resolve_tiling(loaded.meta.get("tiling"), **options.tiling_overrides())
    return detect_files(loaded, paths, 8, tiling, threshold, options.tta)


def _combined(members: list[LoadedRun], weights: list[float], paths, options, threshold: float):
    """Yield (path, size, Detections) or (path, None, error); several members' boxes fused by WBF."""
    streams = [_member_detections(m, paths, options, threshold) for m in members]
    if len(streams) == 1:
        yield from streams[0]
        return
    for outputs in zip(*streams, strict=True):
        path, size, _ = outputs[0]
        failed = [det for _, s, det in outputs if s is None]
        yield (
            (path, None, failed[0]) if failed else (path, size, fuse_models([o[2] for o in outputs], weights))
        )


def predict_detection_files(
    loaded: LoadedRun,
    inputs: list[str],
    out: str | Path | None,
    options: InferenceOptions,
    console: Console,
    score_threshold: float | None = None,
) -> list[dict]:
    """Detect objects in files/folders/globs; write ``options.format`` (+ detections.json) under ``out``.
    Boxes scoring ``score_threshold`` (else ``options.score_threshold``, else each class's threshold
    chosen on val, else the run's single one) or more are kept."""
    out = Path(out) if out else loaded.run.predictions
    return _predict([loaded], [1.0], inputs, out, options, console, score_threshold)


def predict_detection_ensemble(
    ensemble, inputs: list[str], out, options: InferenceOptions, console
) -> list[dict]:
    """The members' boxes fused per image by weighted box fusion (default RUN1/ensemble/predictions)."""
    console.print(ensemble.describe())
    out = Path(out) if out else ensemble.run.predictions
    rows = _predict(ensemble.members, ensemble.weights, inputs, out, options, console)
    ensemble.record({})
    return rows


def _thresholds(members: list[LoadedRun], options: InferenceOptions, score_threshold) -> np.ndarray:
    """[C] per-class thresholds: one run's own (see run_thresholds); an ensemble's: the one given or
    the first run's single threshold."""
    first, override = members[0], options.score_threshold if score_threshold is None else score_threshold
    if len(members) > 1:
        single = first.config.score_threshold if override is None else override
        return np.full(len(first.classes), float(single))
    return class_thresholds(first, override, first.config.score_threshold, None)


def _predict(members, weights, inputs, out: Path, options, console, score_threshold=None) -> list[dict]:
    """Process 0 writes (and draws) every image's boxes, in input order ([] on the other processes)."""
    classes, part = members[0].classes, members[0].part
    threshold = _thresholds(members, options, score_threshold)
    floor = float(threshold.min(initial=1.0))  # the model keeps boxes down to the lowest class threshold
    paths = expand_inputs(inputs)
    found = part.gather(list(_combined(members, weights, part.of(paths), options, floor)))
    if not part.is_main:
        return []
    folder = out.parent if out.suffix else out
    results, rows = [], []
    for path, size, det in found:
        if size is None:
            console.print(f"[yellow]skipped[/] {det}")
            rows.append({"path": str(path), "error": det})
            continue
        results.append((path, size, det))
        rows.append(_row(path, det.above(threshold), classes))
        if options.render is not None:
            render_image(path, det.above(threshold), classes, Path(options.render))
    written = write_predictions(
        predictions_dataset(classes, results, threshold), options.format or "coco", out
    )
    write_json(folder / "detections.json", scores_document(classes, results, threshold))
    total = sum(len(r.get("boxes", [])) for r in rows)
    console.print(
        f"{len(results)} image(s), {total} box(es) at score >= {_describe(classes, threshold)} -> {written} "
        f"(scores in {folder / 'detections.json'})"
        + (f"; drawn in {options.render}" if options.render else "")
    )
    return rows


def _describe(classes: list[str], thresholds: np.ndarray) -> str:
    """'0.25' when one threshold serves every class, else 'rbc 0.31, wbc 0.18'."""
    if len(set(thresholds.tolist())) <= 1:
        return f"{thresholds[0]:g}" if len(thresholds) else "-"
    return ", ".join(f"{c} {t:.2f}" for c, t in zip(classes, thresholds, strict=True))
