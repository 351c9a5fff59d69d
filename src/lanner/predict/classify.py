"""`lanner predict` for classifiers: files, folders and globs in, one CSV row per image out."""

from __future__ import annotations

import csv
import glob
import io
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from lanner._io import write_text
from lanner.data.cache import preprocess
from lanner.data.images import is_image_file
from lanner.errors import DataError
from lanner.models.loading import describe_inference, load_for_inference
from lanner.tasks.classify import Preprocessing, eval_batch


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (searched recursively) and glob patterns -> image paths, in a stable order."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.rglob("*") if q.is_file() and is_image_file(q))
        elif p.is_file():
            paths.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            if not matches:
                raise DataError(f"{item}: no such file, folder or glob match")
            paths += [m for m in matches if m.is_file() and is_image_file(m)]
    return list(dict.fromkeys(paths))


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


def predict_files(
    run: Path,
    inputs: list[str],
    out: str | Path | None = None,
    *,
    topk: int = 5,
    console: Console | None = None,
    batch_size: int = 32,
    device: str = "auto",
    precision: str = "auto",
    **detect_options,
) -> list[dict]:
    console = console or Console()
    loaded = load_for_inference(run, device, precision)
    console.print(describe_inference(loaded))
    if loaded.meta["task"] != "classify":
        from lanner.predict.detect import predict_detection_files

        return predict_detection_files(loaded, inputs, out, console=console, **detect_options)
    prep = Preprocessing.from_dict(loaded.meta["preprocessing"])
    classes = loaded.classes
    k = min(topk, len(classes))
    rows = []
    paths = expand_inputs(inputs)
    for path, probs, error in classify_paths(loaded.model, prep, paths, batch_size, loaded.device):
        if probs is None:
            console.print(f"[yellow]skipped[/] {error}")
            rows.append({"path": str(path), "label": "", "score": "", "topk": "", "error": error})
            continue
        scores, idx = probs.topk(k)
        top = [(classes[i], float(s)) for s, i in zip(scores, idx, strict=True)]
        rows.append(
            {
                "path": str(path),
                "label": top[0][0],
                "score": round(top[0][1], 6),
                "topk": ";".join(f"{c}:{s:.4f}" for c, s in top),
                "error": "",
            }
        )
    out = Path(out) if out else Path(run) / "predictions" / "predictions.csv"
    _write_rows(out, rows)
    console.print(f"{sum(1 for r in rows if not r['error'])} image(s) classified -> {out}")
    return rows


def _write_rows(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["path", "label", "score", "topk", "error"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())
