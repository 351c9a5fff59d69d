"""`lanner predict` for classifiers: files, folders and globs in, one CSV row per image out."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from lanner._io import write_text
from lanner.config import InferenceOptions
from lanner.data.cache import preprocess, square_pixels
from lanner.data.pixels import Preprocessing, eval_batch
from lanner.errors import ConfigError, DataError
from lanner.predict.inputs import expand_inputs
from lanner.predict.results import Classification
from lanner.predict.tta import class_probs
from lanner.tasks.loading import LoadedRun
from lanner.tasks.run_thresholds import class_thresholds

# confident: the top class's score reaches that class's threshold (chosen on val, or --score-threshold)
COLUMNS = ["path", "label", "score", "topk", "confident", "error"]


def classify_paths(
    model, prep: Preprocessing, paths: list[Path], batch_size: int = 32, device="cpu", tta: bool = False
):
    """Yield (path, probs [C] or None, error) for each path; unreadable files do not stop the batch.
    ``tta``: the mean over a few views of each image (:mod:`lanner.predict.tta`)."""
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        arrays, good, errors = [], [], {}
        for p in chunk:
            try:
                arrays.append(preprocess(p, prep.cache_size))
                good.append(p)
            except DataError as e:
                errors[p] = str(e)
        probs = {}
        if arrays:
            probs = dict(zip(good, class_probs(model, np.stack(arrays), prep, device, tta), strict=True))
        for p in chunk:
            yield p, probs.get(p), errors.get(p)


@torch.no_grad()
def classify_images(loaded: LoadedRun, images: list, topk: int, batch_size: int = 32) -> list[Classification]:
    """Upright RGB images in memory -> one :class:`Classification` each (the run's preprocessing)."""
    prep = Preprocessing.from_dict(loaded.meta.get("preprocessing"))
    k, classes, out = min(topk, len(loaded.classes)), loaded.classes, []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        arrays = np.stack([square_pixels(img, prep.cache_size) for img in chunk])  # [B, S, S, 3]
        probs = loaded.model(eval_batch(arrays, prep, loaded.device)).float().softmax(1).cpu()  # [B, C]
        for scores, idx in zip(*probs.topk(k), strict=True):
            top = [(classes[int(i)], float(s)) for s, i in zip(scores, idx, strict=True)]
            out.append(Classification(top[0][0], top[0][1], top))
    return out


def _row(path: Path, probs: torch.Tensor, classes: list[str], k: int, thresholds: np.ndarray) -> dict:
    scores, idx = probs.topk(k)
    top = [(classes[i], float(s)) for s, i in zip(scores, idx, strict=True)]
    return {
        "path": str(path),
        "label": top[0][0],
        "score": round(top[0][1], 6),
        "topk": ";".join(f"{c}:{s:.4f}" for c, s in top),
        "confident": "yes" if float(scores[0]) >= thresholds[int(idx[0])] else "no",
        "error": "",
    }


def _member_probs(loaded: LoadedRun, paths: list[Path], tta: bool):
    prep = Preprocessing.from_dict(loaded.meta.get("preprocessing"))
    return classify_paths(loaded.model, prep, paths, 32, loaded.device, tta)


def _combined(members: list[LoadedRun], weights: list[float], paths: list[Path], tta: bool):
    """Yield (path, weighted mean probabilities or None, error): each member prepares images its own way."""
    streams = [_member_probs(m, paths, tta) for m in members]
    for outputs in zip(*streams, strict=True):
        path, _, error = outputs[0]
        if any(probs is None for _, probs, _ in outputs):
            yield path, None, error or next(e for _, p, e in outputs if p is None)
        else:
            yield path, sum(w * probs for w, (_, probs, _) in zip(weights, outputs, strict=True)), None


def _predict(members, weights, inputs, out: Path, options: InferenceOptions, console: Console) -> list[dict]:
    """Process 0 writes every image's row, in input order ([] returned on the other processes)."""
    part = members[0].part
    paths = expand_inputs(inputs)
    found = part.gather(list(_combined(members, weights, part.of(paths), options.tta)))
    if not part.is_main:
        return []
    classes = members[0].classes
    k = min(options.topk, len(classes))
    thresholds = _thresholds(members, options)
    rows = []
    for path, probs, error in found:
        if probs is None:
            console.print(f"[yellow]skipped[/] {error}")
            rows.append(
                {"path": str(path), "label": "", "score": "", "topk": "", "confident": "", "error": error}
            )
        else:
            rows.append(_row(path, probs, classes, k, thresholds))
    if options.columns:
        _write_submission(out, rows, options.columns, classes)
    else:
        _write_rows(out, rows)
    console.print(f"{sum(1 for r in rows if not r['error'])} image(s) classified -> {out}")
    return rows


def _thresholds(members: list[LoadedRun], options: InferenceOptions) -> np.ndarray:
    """One run: its per-class thresholds (see run_thresholds); an ensemble: --score-threshold or 0."""
    if len(members) == 1:
        return class_thresholds(members[0], options.score_threshold, 0.0, None)
    return np.full(len(members[0].classes), float(options.score_threshold or 0.0))


def predict_classification(
    loaded: LoadedRun, inputs: list[str], out: Path | None, options: InferenceOptions, console: Console
) -> list[dict]:
    out = Path(out) if out else loaded.run.predictions / "predictions.csv"
    return _predict([loaded], [1.0], inputs, out, options, console)


def predict_classification_ensemble(
    ensemble, inputs, out: Path | None, options, console: Console
) -> list[dict]:
    """The members' weighted mean probabilities per image (default RUN1/ensemble/predictions/)."""
    console.print(ensemble.describe())
    out = Path(out) if out else ensemble.run.predictions / "predictions.csv"
    rows = _predict(ensemble.members, ensemble.weights, inputs, out, options, console)
    ensemble.record({})
    return rows


def _write_rows(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


# A submission file's columns (``--columns Id=stem,Expected=index``): HEADER=SOURCE, in order.
SOURCES = {
    "stem": lambda row, classes: Path(row["path"]).stem,  # the file name without its extension
    "file": lambda row, classes: Path(row["path"]).name,
    "path": lambda row, classes: row["path"],
    "name": lambda row, classes: row["label"],  # the class name
    "index": lambda row, classes: classes.index(row["label"]) if row["label"] else "",  # 0-based
    "score": lambda row, classes: row["score"],
}


def parse_columns(text: str) -> list[tuple[str, str]]:
    """``Id=stem,Expected=name`` -> [(header, source)]; a ConfigError naming what is wrong."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    bad = [p[0] for p in pairs if len(p) != 2 or p[1].strip() not in SOURCES or not p[0].strip()]
    if bad or not pairs:
        raise ConfigError(
            f"--columns {text!r}: give HEADER=SOURCE pairs, comma-separated, SOURCE one of "
            f"{', '.join(SOURCES)} (e.g. Id=stem,Expected=name)"
        )
    return [(header.strip(), source.strip()) for header, source in pairs]


def _write_submission(path: Path, rows: list[dict], columns: str, classes: list[str]) -> None:
    """A Kaggle-style CSV: only the columns asked for, under the headers asked for."""
    chosen = parse_columns(columns)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([header for header, _ in chosen])
    w.writerows([SOURCES[source](row, classes) for _, source in chosen] for row in rows)
    write_text(path, buf.getvalue())
