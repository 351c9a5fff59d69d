"""`lanner predict DET_RUN IMAGES --classify CLS_RUN`: detect, then re-label every kept box.

Output (default ``DET_RUN/two_stage/predictions/``): the boxes with the classifier's labels in the
``--format`` asked for (annotation formats hold no scores), ``detections.json`` with each box's
``det_label``, ``det_score``, ``cls_score`` and ``score`` (their product), ``two_stage.csv`` with one
row per box and the same fields, and with ``--render`` the boxes drawn with both scores.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from rich.console import Console

from lanner._io import write_json, write_text
from lanner.config import InferenceOptions
from lanner.data.images import open_image
from lanner.errors import DataError
from lanner.predict.inputs import expand_inputs
from lanner.tasks.detect.predict import detect_files, predictions_dataset, render_image, write_predictions
from lanner.tasks.detect.tiled import resolve_tiling
from lanner.tasks.run_thresholds import class_thresholds
from lanner.tasks.two_stage.pipeline import Relabelled, TwoStage, relabel

BOX_COLUMNS = [
    "path", "xmin", "ymin", "xmax", "ymax", "label", "score", "det_label", "det_score", "cls_score",
]  # fmt: skip


def detector_thresholds(pipeline: TwoStage, options: InferenceOptions) -> np.ndarray:
    """[detector classes] the detector's score thresholds: the boxes it keeps are the ones classified."""
    det = pipeline.detector
    return class_thresholds(det, options.score_threshold, det.config.score_threshold, None)


def _relabelled_files(pipeline: TwoStage, paths: list[Path], options: InferenceOptions, console: Console):
    """Yield (path, size, Relabelled) for each readable file; unreadable ones are reported and skipped."""
    det = pipeline.detector
    threshold = detector_thresholds(pipeline, options)
    tiling = resolve_tiling(det.meta.get("tiling"), **options.tiling_overrides())
    floor = float(threshold.min(initial=1.0))
    for path, size, found in detect_files(det, paths, 8, tiling, floor, options.tta):
        try:
            if size is None:
                raise DataError(found)
            yield path, size, relabel(pipeline, open_image(path), found.above(threshold))
        except DataError as e:
            console.print(f"[yellow]skipped[/] {e}")


def box_entry(pipeline: TwoStage, r: Relabelled) -> dict:
    """One image's boxes with both scores (detections.json, the report's gallery)."""
    det_classes = pipeline.detector.classes
    return {
        "boxes": np.round(r.det.boxes, 2).tolist(),
        "labels": [pipeline.classes[int(c)] for c in r.det.labels],
        "scores": np.round(r.det.scores, 4).tolist(),
        "det_labels": [det_classes[int(c)] for c in r.det_labels],
        "det_scores": np.round(r.det_scores, 4).tolist(),
        "cls_scores": np.round(r.cls_scores, 4).tolist(),
    }


def _box_rows(path: Path, entry: dict) -> list[list]:
    fields = zip(entry["boxes"], entry["labels"], entry["scores"], entry["det_labels"], entry["det_scores"],
                 entry["cls_scores"], strict=True)  # fmt: skip
    return [[str(path), *box, label, s, dl, ds, cs] for box, label, s, dl, ds, cs in fields]


def captions(pipeline: TwoStage, r: Relabelled) -> list[str]:
    return [f"{pipeline.classes[int(c)]} {cs:.2f} (det {ds:.2f})"
            for c, cs, ds in zip(r.det.labels, r.cls_scores, r.det_scores, strict=True)]  # fmt: skip


def _write(pipeline: TwoStage, results: list, entries: list[dict], out: Path, fmt: str | None) -> Path:
    folder = out.parent if out.suffix else out
    written = write_predictions(
        predictions_dataset(pipeline.classes, [(p, s, r.det) for p, s, r in results], 0.0), fmt or "coco", out
    )
    write_json(folder / "detections.json", {"classes": pipeline.classes, "images": entries,
               "detector_classes": pipeline.detector.classes, "score": "det_score * cls_score"})  # fmt: skip
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(BOX_COLUMNS)
    for (path, _, _), entry in zip(results, entries, strict=True):
        writer.writerows(_box_rows(path, entry))
    write_text(folder / "two_stage.csv", buffer.getvalue())
    return written


def predict_two_stage(
    pipeline: TwoStage, inputs: list[str], out: Path | None, options: InferenceOptions, console: Console
) -> list[dict]:
    """Boxes the detector keeps, re-labelled by the classifier; one row per image (as detect's predict
    returns, plus ``det_labels``, ``det_scores``, ``cls_scores``)."""
    console.print(pipeline.describe())
    out = Path(out) if out else pipeline.run.predictions
    results, entries = [], []
    for path, size, r in _relabelled_files(pipeline, expand_inputs(inputs), options, console):
        results.append((path, size, r))
        entries.append({"path": str(path), "width": size[0], "height": size[1], **box_entry(pipeline, r)})
        if options.render is not None:
            render_image(path, r.det, pipeline.classes, Path(options.render), captions(pipeline, r))
    written = _write(pipeline, results, entries, out, options.format)
    pipeline.record()
    total = sum(len(e["boxes"]) for e in entries)
    console.print(f"{len(results)} image(s), {total} box(es) re-labelled by the classifier -> {written} "
                  f"(both scores in detections.json and two_stage.csv)"
                  + (f"; drawn in {options.render}" if options.render else ""))  # fmt: skip
    return [{**e, "error": ""} for e in entries]
