"""Build ``report.html``: one self-contained file (data, images, CSS and JS inlined) from a run directory.

Python only reads the run directory, prepares JSON-safe data and embeds downscaled images; every bit of
HTML is built in the browser by ``report.js`` with ``textContent``/``setAttribute``, so no string from the
user's data is ever parsed as HTML. The data travels as JSON in ``<script type="application/json">`` with
``<``, ``>`` and ``&`` escaped, and a Content-Security-Policy with a per-file nonce forbids any load from
outside the file.

"Worst first" (the gallery order and the choice of which images to embed when there are more than
``max_images``) is each task's own rule (``Task.gallery_prepare``): for classification the most
confident mistakes first; for detection the images with the most errors at the report's threshold.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import secrets
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from lanner._io import write_text
from lanner.data.images import open_image
from lanner.engine.history import overfitting_start, read_history
from lanner.errors import CheckpointError, DataError, LannerError
from lanner.eval.label_issues import read_issues
from lanner.rundir import RunDir
from lanner.tasks import get_task

DEFAULT_THRESHOLD = 0.5
MAX_SIDE = 512
TOTAL_IMAGE_BUDGET = 12_000_000  # bytes of base64 image data for the whole gallery (keeps the file < 15 MB)
PER_IMAGE_CAP = 400_000  # no single image may take more than this, however few there are
JPEG_QUALITIES = (80, 65, 50)
MAX_LABEL_ISSUES = 60  # likely label errors (lanner review) shown, most likely first
ISSUE_IMAGE_BUDGET = 6_000_000  # bytes of base64 image data for them
ISSUE_KEYS = ("kind", "given", "suggested", "score", "given_prob", "suggested_prob", "iou")


# ----------------------------------------------------------------------------------------------- entry point
def build_report(
    run_dir: str | Path, out: str | Path | None = None, *, max_images: int = 100, max_side: int = MAX_SIDE
) -> Path:
    """Write the run's self-contained HTML report and return its path (default ``RUN/report.html``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run directory not found")
    data = collect(run_dir, max_images=max_images, max_side=max_side)
    out = Path(out) if out is not None else RunDir(run_dir).report
    write_text(out, render(data))
    return out


def collect(run_dir: Path, *, max_images: int = 100, max_side: int = MAX_SIDE) -> dict[str, Any]:
    """Everything the page shows, as one JSON-safe dict; missing or broken files become ``problems``."""
    problems: list[str] = []
    run = RunDir(run_dir)
    config = _read(run.config, _load_yaml, problems) or {}
    metrics = _read(run.metrics, _load_json, problems) or {}
    predictions = _read(run.eval_predictions, _load_json, problems) or {}
    segments = _read(run.segments, _load_json, problems) or []
    task = metrics.get("task") or predictions.get("task") or config.get("task") or "classify"
    classes = list(metrics.get("classes") or predictions.get("classes") or [])
    threshold = _threshold(metrics, config)
    data = {
        "run": run_dir.resolve().name,
        "task": task,
        "classes": [str(c) for c in classes],
        "config": config,
        "history": _read(run.history, _load_history, problems) or {},
        "overfitting": _overfitting(run, config, task),
        "segments": segments if isinstance(segments, list) else [],
        "data_check": _read(run.data_check, _load_json, problems),
        "metrics": metrics,
        "hardware": _hardware(run_dir, segments, metrics, problems),
        "pr_curves": _plot_uri(run.pr_curves, problems),
        "threshold": threshold,
        "class_thresholds": _class_thresholds(metrics, classes),
        "gallery": None,
        "label_issues": _label_issues(run, config, max_side, problems),
        "problems": problems,
    }
    if predictions.get("images"):
        data["gallery"] = _gallery(
            predictions, task, threshold, run_dir, config, max_images, max_side, problems
        )
    return _json_safe(data)


def render(data: dict[str, Any]) -> str:
    """Fill the template: CSS, JS and the JSON data inline, all under one CSP nonce."""
    nonce = secrets.token_urlsafe(16)
    template = _asset("template.html")
    parts = {
        "NONCE": nonce,
        "TITLE": html.escape(f"lanner report: {data.get('run', '')}"),
        "CSS": _asset("report.css"),
        "JS": _asset("report.js").replace("</", "<\\/"),
        "DATA": script_json(data),
    }
    # One pass, so a placeholder-looking string inside the data is never substituted again.
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: parts[m.group(1)], template)


def script_json(obj: Any) -> str:
    """JSON safe to place inside ``<script type="application/json">``: no ``<``, ``>``, ``&`` survive."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for ch, esc in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(ch, esc)
    return text


# ------------------------------------------------------------------------------------------------ reading
def _read(path: Path, loader, problems: list[str]) -> Any:
    if not path.exists():
        return None
    try:
        return loader(path)
    except Exception as e:  # noqa: BLE001 - a broken file must not stop the rest of the report
        problems.append(f"{path.name}: cannot read ({type(e).__name__}: {e})")
        return None


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _load_history(path: Path) -> dict[str, list]:
    """history.csv as columns; numbers as floats, blanks as None (JSON null)."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list] = {}
    for row in rows:
        for key, value in row.items():
            if key is not None:
                columns.setdefault(key, []).append(_number(value))
    return columns


def _number(value: Any) -> Any:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _threshold(metrics: dict, config: dict) -> float:
    for value in (metrics.get("score_threshold"), config.get("score_threshold")):
        if isinstance(value, (int, float)) and 0 <= value <= 1:
            return float(value)
    return DEFAULT_THRESHOLD


def _overfitting(run: RunDir, config: dict, task: str) -> dict | None:
    """The trainer's over-fitting rule on history.csv (engine.history.overfitting_start)."""
    try:
        rows = read_history(run.history)
        monitor = config.get("monitor") or get_task(task).monitor
    except (OSError, ValueError, LannerError):
        return None
    return overfitting_start(rows, monitor) if rows else None


def _class_thresholds(metrics: dict, classes: list) -> list | None:
    """Each class's score threshold (per_class[name].threshold) in class order, or None."""
    per_class = metrics.get("per_class")
    if not isinstance(per_class, dict):
        return None
    found = [(per_class.get(str(c)) or {}).get("threshold") for c in classes]
    return found if any(isinstance(t, (int, float)) for t in found) else None


def _hardware(run_dir: Path, segments: Any, metrics: dict, problems: list[str]) -> Any:
    """Hardware as recorded by the engine: hardware.json, else the latest segment's or metrics' entry."""
    found = _read(RunDir(run_dir).hardware, _load_json, problems)
    if found:
        return found
    if isinstance(segments, list):
        for seg in reversed(segments):
            if isinstance(seg, dict) and seg.get("hardware"):
                return seg["hardware"]
    return metrics.get("hardware")


def _plot_uri(path: Path, problems: list[str]) -> str | None:
    if not path.exists():
        return None
    raw = path.read_bytes()
    if len(raw) <= 1_500_000:
        return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")
    try:
        return _encode(open_image(path), 1600, 1_500_000)[0]
    except DataError as e:
        problems.append(str(e))
        return None


def _asset(name: str) -> str:
    return resources.files("lanner.report").joinpath(name).read_text(encoding="utf-8")


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN), tuples -> lists, keys -> str, unknown objects -> str."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


# ------------------------------------------------------------------------------------------------ gallery
def _gallery(
    predictions: dict,
    task: str,
    threshold: float,
    run_dir: Path,
    config: dict,
    max_images: int,
    max_side: int,
    problems: list[str],
) -> dict[str, Any]:
    plugin = get_task(task)
    records = [dict(r) for r in predictions["images"] if isinstance(r, dict)]
    for r in records:
        plugin.gallery_prepare(r, threshold)
    chosen = select_images(records, plugin.gallery_classes, max_images)
    bases = _search_bases(run_dir, config)
    per_image = min(PER_IMAGE_CAP, TOTAL_IMAGE_BUDGET // max(1, len(chosen)))
    missing = 0
    items = []
    for r in chosen:
        item = _gallery_item(r, plugin.gallery_keys, bases, max_side, per_image)
        missing += item["src"] is None
        items.append(item)
    if missing:
        problems.append(
            f"{missing} of {len(chosen)} gallery images could not be read; boxes are drawn on grey"
        )
    return {"total": len(records), "shown": len(items), "images": items}


def _gallery_item(r: dict, keys: tuple, bases: list[Path], max_side: int, max_bytes: int) -> dict[str, Any]:
    path_text = str(r.get("path", ""))
    src, size = None, None
    found = _resolve(path_text, bases)
    if found is not None:
        try:
            src, size = _encode(open_image(found), max_side, max_bytes)
        except DataError:
            src = None
    width = r.get("width") or (size[0] if size else None)
    height = r.get("height") or (size[1] if size else None)
    if not width or not height:
        width, height = _extent(r)
    item = {
        "path": path_text,
        "name": Path(path_text).name or path_text,
        "width": width,
        "height": height,
        "src": src,
        "badness": r["badness"],
    }
    item.update({k: r.get(k) for k in keys})
    return item


# ------------------------------------------------------------------------------------ likely label errors
def _label_issues(run: RunDir, config: dict, max_side: int, problems: list[str]) -> dict[str, Any] | None:
    """RUN/review/label_issues.csv (``lanner review``), the most likely first, each image embedded once."""
    rows = _read(run.label_issues, read_issues, problems)
    if rows is None:
        return None
    shown, bases, embedded = rows[:MAX_LABEL_ISSUES], _search_bases(run.path, config), {}
    per_image = min(PER_IMAGE_CAP, ISSUE_IMAGE_BUDGET // max(1, len({r.get("path") for r in shown})))
    items = []
    for r in shown:
        path_text = str(r.get("path") or "")
        if path_text not in embedded:
            embedded[path_text] = _embedded(path_text, bases, max_side, per_image)
        items.append(_issue_item(r, *embedded[path_text]))
    review = _read(run.review / "review.json", _load_json, problems) or {}
    paths = sorted({str(r.get("path")) for r in rows})  # the gallery's "likely label errors" filter
    return {"total": len(rows), "shown": len(items), "review": review, "items": items, "paths": paths}


def _embedded(path_text: str, bases: list[Path], max_side: int, max_bytes: int) -> tuple[str | None, Any]:
    """(data URI, (width, height)) of an image, (None, None) when it cannot be read."""
    found = _resolve(path_text, bases)
    try:
        return _encode(open_image(found), max_side, max_bytes) if found is not None else (None, None)
    except DataError:
        return None, None


def _issue_item(r: dict, src: str | None, size) -> dict[str, Any]:
    box = [r.get(k) for k in ("x1", "y1", "x2", "y2")]
    sbox = [r.get(k) for k in ("sx1", "sy1", "sx2", "sy2")]
    box, sbox = (b if all(isinstance(v, float) for v in b) else None for b in (box, sbox))
    width, height = size or _extent({"gt_boxes": [b for b in (box, sbox) if b]})
    path_text = str(r.get("path") or "")
    item = {k: r.get(k) for k in ISSUE_KEYS}
    name = Path(path_text).name or path_text
    return {**item, "path": path_text, "name": name, "src": src, "width": width, "height": height,
            "box": box, "sbox": sbox}  # fmt: skip


def _extent(r: dict) -> tuple[float, float]:
    boxes = list(r.get("gt_boxes") or []) + list(r.get("pred_boxes") or [])
    if not boxes:
        return 100.0, 100.0
    return max(1.0, max(b[2] for b in boxes)), max(1.0, max(b[3] for b in boxes))


def _search_bases(run_dir: Path, config: dict) -> list[Path]:
    """Where relative image paths may be relative to: the data root, the run dir, its parent, the cwd."""
    bases = []
    data = config.get("data")
    if isinstance(data, str) and data:
        root = Path(data)
        bases += [root if root.is_dir() else root.parent]
    bases += [run_dir, run_dir.parent, Path.cwd()]
    return bases


def _resolve(path_text: str, bases: list[Path]) -> Path | None:
    if not path_text:
        return None
    path = Path(path_text)
    if path.is_absolute():
        return path if path.is_file() else None
    for base in bases:
        if (base / path).is_file():
            return base / path
    return None


def _encode(img, max_side: int, max_bytes: int) -> tuple[str, tuple[int, int]]:
    """Downscale to ``max_side`` and JPEG-encode, lowering quality then size until under ``max_bytes``."""
    size = img.size
    side = max_side
    while True:
        small = img.copy()
        small.thumbnail((side, side))
        for quality in JPEG_QUALITIES:
            buf = io.BytesIO()
            small.save(buf, format="JPEG", quality=quality, optimize=True)
            uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
            if len(uri) <= max_bytes or side <= 64:
                return uri, size
        side = int(side * 0.7)


def select_images(records: list[dict], classes_of: Callable[[dict], set], max_images: int) -> list[dict]:
    """The ``max_images`` worst images, keeping a few of every class so class filters never come up empty.

    Each class first gets up to ``max_images // (4 * n_classes)`` (at least 1) of its worst images, then
    the rest is filled with the worst overall; the result is sorted worst first.
    """
    ranked = sorted(records, key=lambda r: r["badness"], reverse=True)
    if len(ranked) <= max_images:
        return ranked
    classes = set().union(*(classes_of(r) for r in ranked)) - {None}
    quota = max(1, max_images // (4 * max(1, len(classes))))
    picked: dict[int, dict] = {}
    for c in sorted(classes, key=str):
        for r in [r for r in ranked if c in classes_of(r)][:quota]:
            if len(picked) < max_images:
                picked[id(r)] = r
    for r in ranked:
        if len(picked) >= max_images:
            break
        picked.setdefault(id(r), r)
    return sorted(picked.values(), key=lambda r: r["badness"], reverse=True)
