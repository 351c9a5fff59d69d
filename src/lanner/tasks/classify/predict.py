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
from lanner.data.cache import preprocess
from lanner.data.pixels import Preprocessing, eval_batch
from lanner.errors import DataError
from lanner.predict.inputs import expand_inputs
from lanner.tasks.loading import LoadedRun
from lanner.tasks.run_thresholds import class_thresholds

# confident: the top class's score reaches that class's threshold (chosen on val, or --score-threshold)
COLUMNS = ["path", "label", "score", "topk", "confident", "error"]


@torch.no_grad()
def classify_paths(model, prep: Preprocessing, paths: list[Path], batch_size: int = 32, device="cpu"):
    """Yield (path, probs [C] or None, error) for each path; unreadable files do not stop the batch."""
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
            logits = model(eval_batch(np.stack(arrays), prep, device)).float().cpu()
            probs = dict(zip(good, logits.softmax(1), strict=True))
        for p in chunk:
            yield p, probs.get(p), errors.get(p)


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


def predict_classification(
    loaded: LoadedRun, inputs: list[str], out: Path | None, options: InferenceOptions, console: Console
) -> list[dict]:
    prep = Preprocessing.from_dict(loaded.meta.get("preprocessing"))
    k = min(options.topk, len(loaded.classes))
    thresholds = class_thresholds(loaded, options.score_threshold, 0.0, None)
    rows = []
    for path, probs, error in classify_paths(loaded.model, prep, expand_inputs(inputs), 32, loaded.device):
        if probs is None:
            console.print(f"[yellow]skipped[/] {error}")
            rows.append(
                {"path": str(path), "label": "", "score": "", "topk": "", "confident": "", "error": error}
            )
        else:
            rows.append(_row(path, probs, loaded.classes, k, thresholds))
    out = Path(out) if out else loaded.run.predictions / "predictions.csv"
    _write_rows(out, rows)
    console.print(f"{sum(1 for r in rows if not r['error'])} image(s) classified -> {out}")
    return rows


def _write_rows(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())
