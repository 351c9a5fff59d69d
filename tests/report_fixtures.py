"""Realistic run directories on disk, with real images, for the report tests.

* a classification run on scikit-learn's handwritten digits (PNG files, upscaled), with predictions and
  probabilities from a real (logistic-regression) classifier, so mistakes and top-k are genuine;
* a detection run: grey canvases with digits pasted at known boxes, a simulated detector that finds most,
  misses some, confuses some and adds low-score false positives;
* an XSS run whose class name, file name, run name and config values are HTML/JS injection attempts.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import classification_report, confusion_matrix

from lanner.data.geometry import box_iou

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
XSS_CLASS = "<img src=x onerror=alert(1)>"
XSS_FILE = 'x"><svg onload=window.__xss=1>.png'
XSS_CONFIG = "</script><script>window.__xss=2</script>"
XSS_RUN = 'run"><img src=x onerror=window.__xss=3>'


def _digit_image(pixels: np.ndarray, side: int) -> Image.Image:
    arr = (pixels / 16.0 * 255).astype("uint8")
    return Image.fromarray(255 - arr).resize((side, side), Image.BILINEAR).convert("RGB")


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2), encoding="utf-8")


def _write_history(run: Path, rows: list[dict]) -> None:
    with (run / "history.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _segments(resume_at: int) -> list[dict]:
    hardware = {
        "device": "cuda:0",
        "gpu": "NVIDIA H100 80GB HBM3",
        "cpu_count": 16,
        "torch": "2.5.1",
        "lanner": "0.1.0",
        "precision": "bf16",
    }
    return [
        {
            "index": 0,
            "start_epoch": 0,
            "start_step": 0,
            "reason": "start",
            "changes": {},
            "time": "2026-11-25T08:00:00",
            "schedule": {"name": "cosine"},
            "hardware": hardware,
        },
        {
            "index": 1,
            "start_epoch": resume_at,
            "start_step": resume_at * 90,
            "reason": "resume",
            "changes": {"lr": [0.01, 0.001], "epochs": [10, 14]},
            "time": "2026-11-25T09:12:00",
            "schedule": {"name": "cosine"},
            "hardware": hardware,
        },
    ]


def _history(
    epochs: int, resume_at: int, metrics: dict[str, tuple[float, float]], seed: int = 0
) -> list[dict]:
    """Plausible curves: losses fall, metrics rise towards their final value, LR jumps down at the resume."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(1, epochs + 1):
        t = e / epochs
        seg = 0 if e <= resume_at else 1
        lr = (
            0.01 * (0.5 + 0.5 * np.cos(np.pi * t))
            if seg == 0
            else 0.001 * (1 - (e - resume_at) / (epochs - resume_at + 1))
        )
        row = {
            "epoch": e,
            "segment": seg,
            "lr": f"{lr:.6g}",
            "train_loss": f"{2.2 * np.exp(-3 * t) + 0.05 + rng.normal(0, 0.02):.5f}",
            "val_loss": f"{2.0 * np.exp(-2.5 * t) + 0.15 + rng.normal(0, 0.03):.5f}",
        }
        for name, (start, end) in metrics.items():
            row[name] = f"{start + (end - start) * (1 - np.exp(-4 * t)) + rng.normal(0, 0.01):.5f}"
        row["epoch_time_s"] = f"{30 + rng.normal(0, 2):.2f}"
        row["images_per_s"] = f"{480 + rng.normal(0, 15):.1f}"
        rows.append(row)
    return rows


def _config(task: str, data: Path, run: Path, **extra) -> dict:
    cfg = {
        "data": str(data),
        "task": task,
        "format": "folder" if task == "classify" else "coco",
        "run": str(run),
        "model": "resnet18" if task == "classify" else "fasterrcnn_mobilenet_v3",
        "pretrained": None,
        "image_size": 224,
        "batch_size": 32,
        "epochs": 14,
        "optimizer": "adamw",
        "lr": 0.001,
        "weight_decay": 0.05,
        "schedule": {"name": "cosine", "warmup_epochs": 1.0},
        "augment": "default",
        "seed": 0,
        "device": "auto",
        "precision": "auto",
        "score_threshold": 0.5,
    }
    cfg.update(extra)
    return cfg


# ------------------------------------------------------------------------------------------- classification
def make_classify_run(root: Path, *, n_images: int = 60, xss: bool = False, side: int = 96) -> Path:
    """A finished classification run evaluated on ``n_images`` real digit images."""
    digits = load_digits()
    names = list(DIGIT_NAMES)
    if xss:
        names[3] = XSS_CLASS
    run = root / (XSS_RUN if xss else "classify-run")
    data = root / ("data-xss" if xss else "data-classify")
    run.mkdir(parents=True)
    (run / "eval").mkdir()
    rng = np.random.default_rng(1)
    order = rng.permutation(len(digits.target))
    train, test = order[:200], order[200 : 200 + n_images]
    clf = LogisticRegression(max_iter=300).fit(digits.data[train], digits.target[train])
    proba = clf.predict_proba(digits.data[test])
    images, y_true, y_pred = [], [], []
    for k, (i, p) in enumerate(zip(test, proba, strict=True)):
        label = int(digits.target[i])
        fname = XSS_FILE if (xss and k == 0) else f"digit_{int(i):04d}.png"
        path = data / names[label].replace("/", "_") / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        _digit_image(digits.images[i], side).save(path)
        top = np.argsort(-p)[:5]
        images.append(
            {
                "path": str(path),
                "width": side,
                "height": side,
                "gt_label": label,
                "pred_label": int(top[0]),
                "score": float(p[top[0]]),
                "topk": [[int(c), float(p[c])] for c in top],
            }
        )
        y_true.append(label)
        y_pred.append(int(top[0]))
    _write_json(
        run / "eval" / "predictions.json",
        {"task": "classify", "classes": names, "split": "test", "images": images},
    )
    report = classification_report(
        y_true, y_pred, labels=range(10), target_names=names, output_dict=True, zero_division=0
    )
    per_class = {
        n: {
            "precision": report[n]["precision"],
            "recall": report[n]["recall"],
            "f1": report[n]["f1-score"],
            "support": int(report[n]["support"]),
        }
        for n in names
    }

    def avg(k: str) -> dict:
        r = report[k]
        return {
            "precision": r["precision"],
            "recall": r["recall"],
            "f1": r["f1-score"],
            "support": int(r["support"]),
        }

    top5 = float(np.mean([t in np.argsort(-p)[:5] for t, p in zip(y_true, proba, strict=True)]))
    _write_json(
        run / "metrics.json",
        {
            "task": "classify",
            "split": "test",
            "num_images": len(images),
            "classes": names,
            "accuracy": float(np.mean(np.array(y_true) == np.array(y_pred))),
            "top5_accuracy": top5,
            "per_class": per_class,
            "macro_avg": avg("macro avg"),
            "weighted_avg": avg("weighted avg"),
            "confusion_matrix": confusion_matrix(y_true, y_pred, labels=range(10)).tolist(),
        },
    )
    notes = XSS_CONFIG if xss else "baseline"
    (run / "config.yaml").write_text(
        yaml.safe_dump(_config("classify", data, run, notes=notes), sort_keys=False)
    )
    _write_history(run, _history(14, 8, {"val_acc": (0.3, 0.93), "val_top5": (0.6, 0.995)}))
    _write_json(run / "segments.json", _segments(8))
    counts = {n: int(np.sum(digits.target[order[: 200 + n_images]] == i)) for i, n in enumerate(names)}
    _write_json(
        run / "data_check.json",
        {
            "num_images": 200 + n_images,
            "num_classes": 10,
            "class_counts": counts,
            "problems": [f"2 near-duplicate images across train/val in class {names[3]!s}"],
            "warnings": ["images are small (8x8 upscaled); consider --image-size 64"],
        },
    )
    return run


# ------------------------------------------------------------------------------------------------ detection
DET_CLASSES = ["zero", "one", "seven"]
DET_DIGITS = [0, 1, 7]


def _paste_digits(rng, digits, size: tuple[int, int]) -> tuple[Image.Image, list, list]:
    w, h = size
    canvas = Image.new("RGB", size, (200, 205, 210))
    ImageDraw.Draw(canvas).rectangle([w // 3, h // 2, w // 2, h - 5], fill=(170, 180, 190))
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(0, len(DET_CLASSES)))
        pool = np.flatnonzero(digits.target == DET_DIGITS[cls])
        side = int(rng.integers(min(w, h) // 8, min(w, h) // 4))
        x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
        box = [x, y, x + side, y + side]
        if boxes and box_iou([box], boxes).max() > 0.1:
            continue
        canvas.paste(_digit_image(digits.images[int(rng.choice(pool))], side), (x, y))
        boxes.append(box)
        labels.append(cls)
    return canvas, boxes, labels


def _simulated_detector(rng, boxes: list, labels: list, size: tuple[int, int]) -> tuple[list, list, list]:
    """Finds ~80% of objects (some with the wrong class), misses the rest, adds low-score false positives."""
    w, h = size
    pb, pl, ps = [], [], []
    for box, lab in zip(boxes, labels, strict=True):
        r = rng.random()
        if r < 0.12:
            continue  # missed
        jit = rng.normal(0, 0.04 * (box[2] - box[0]), 4)
        pb.append(
            [
                float(np.clip(v + j, 0, w if k % 2 == 0 else h))
                for k, (v, j) in enumerate(zip(box, jit, strict=True))
            ]
        )
        pl.append(int((lab + 1) % len(DET_CLASSES)) if r < 0.22 else lab)
        ps.append(float(rng.uniform(0.55, 0.99)))
    for _ in range(int(rng.integers(0, 3))):
        x, y, s = rng.uniform(0, w * 0.8), rng.uniform(0, h * 0.8), rng.uniform(15, min(w, h) * 0.2)
        pb.append([float(x), float(y), float(x + s), float(y + s)])
        pl.append(int(rng.integers(0, len(DET_CLASSES))))
        ps.append(float(rng.uniform(0.05, 0.7)))
    return pb, pl, ps


def _pr_png(path: Path) -> None:
    img = Image.new("RGB", (480, 320), "white")
    d = ImageDraw.Draw(img)
    d.line([(40, 280), (460, 280)], fill="black")
    d.line([(40, 20), (40, 280)], fill="black")
    for k, color in enumerate(["#2563eb", "#dc2626", "#16a34a"]):
        pts = [(40 + 420 * r, 280 - 260 * (1 - r ** (3 + k))) for r in np.linspace(0, 1, 30)]
        d.line(pts, fill=color, width=2)
    d.text((200, 295), "recall", fill="black")
    img.save(path)


def make_detect_run(root: Path, *, n_images: int = 24, size: tuple[int, int] = (320, 240)) -> Path:
    """A finished detection run evaluated on ``n_images`` canvases with digits pasted at known boxes."""
    from lanner.tasks.detect.report import match_detections

    digits = load_digits()
    run, data = root / "detect-run", root / "data-detect"
    (run / "eval").mkdir(parents=True)
    data.mkdir(parents=True)
    rng = np.random.default_rng(7)
    images = []
    for i in range(n_images):
        canvas, boxes, labels = _paste_digits(rng, digits, size)
        path = data / f"canvas_{i:03d}.jpg"
        canvas.save(path, quality=92)
        pb, pl, ps = _simulated_detector(rng, boxes, labels, size)
        images.append(
            {
                "path": str(path),
                "width": size[0],
                "height": size[1],
                "gt_boxes": boxes,
                "gt_labels": labels,
                "pred_boxes": pb,
                "pred_labels": pl,
                "pred_scores": ps,
            }
        )
    _write_json(
        run / "eval" / "predictions.json",
        {"task": "detect", "classes": DET_CLASSES, "split": "val", "images": images},
    )
    _write_json(run / "metrics.json", _detect_metrics(images, match_detections, 0.5))
    _pr_png(run / "eval" / "pr_curves.png")
    (run / "config.yaml").write_text(yaml.safe_dump(_config("detect", data, run), sort_keys=False))
    _write_history(run, _history(14, 6, {"val_map": (0.05, 0.62), "val_map50": (0.1, 0.85)}, seed=3))
    _write_json(run / "segments.json", _segments(6))
    _write_json(
        run / "data_check.json",
        {
            "num_images": n_images,
            "num_boxes": sum(len(r["gt_boxes"]) for r in images),
            "problems": [],
            "warnings": ["3 boxes smaller than 16 px"],
        },
    )
    return run


def _detect_metrics(images: list[dict], match, thr: float) -> dict:
    n = len(DET_CLASSES)
    stats = {c: {"tp": 0, "fp": 0, "misses": 0, "support": 0} for c in range(n)}
    cm = [[0] * (n + 1) for _ in range(n + 1)]
    for r in images:
        m = match(r)
        for g, lab in enumerate(r["gt_labels"]):
            stats[lab]["support"] += 1
            hit = m["gt_hit_score"][g]
            if hit is None or hit < thr:
                stats[lab]["misses"] += 1
        for p, lab in enumerate(r["pred_labels"]):
            if r["pred_scores"][p] < thr:
                continue
            if m["pred_match"][p] >= 0:
                stats[lab]["tp"] += 1
                cm[lab][lab] += 1
            else:
                stats[lab]["fp"] += 1
                wrong = m["pred_wrong"][p]
                cm[r["gt_labels"][wrong] if wrong >= 0 else n][lab] += 1
    per_class = {}
    for c, s in stats.items():
        prec = s["tp"] / max(1, s["tp"] + s["fp"])
        rec = s["tp"] / max(1, s["support"])
        per_class[DET_CLASSES[c]] = {
            "ap": rec * prec,
            "ap50": min(1.0, rec * prec + 0.2),
            "precision": prec,
            "recall": rec,
            "f1": 2 * prec * rec / max(1e-9, prec + rec),
            **s,
        }
    return {
        "task": "detect",
        "split": "val",
        "num_images": len(images),
        "classes": DET_CLASSES,
        "map": 0.58,
        "map50": 0.83,
        "map75": 0.61,
        "map_small": -1.0,
        "map_medium": 0.55,
        "map_large": 0.7,
        "mar_1": 0.4,
        "mar_10": 0.66,
        "mar_100": 0.67,
        "per_class": per_class,
        "confusion_matrix": cm,
        "score_threshold": thr,
        "errors": _error_breakdown(),
    }


def _error_breakdown() -> dict:
    kinds = ("classification", "localisation", "both", "duplicate", "background", "missed")
    return {
        "tide_map50": 0.8,
        "dap50": {k: 0.01 * (i + 1) for i, k in enumerate(kinds)},
        "dap": {k: 0.005 * (i + 1) for i, k in enumerate(kinds)},
        "counts": {k: i + 1 for i, k in enumerate(kinds)},
        "per_class": {name: {k: 1 for k in kinds} for name in DET_CLASSES},
    }


def make_partial_run(root: Path) -> Path:
    """A run that has trained one epoch and was never evaluated: config, history, segments only. Its
    one row has a single LR and val_acc = train_acc = 0 (nothing learnt yet), for the charts' axes."""
    run = root / "partial-run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(_config("classify", root, run), sort_keys=False))
    row = _history(3, 3, {"val_acc": (0.2, 0.6)})[0]
    _write_history(run, [{**row, "val_acc": "0", "train_acc": "0"}])
    _write_json(run / "segments.json", _segments(3)[:1])
    return run


def make_heavy_images(directory: Path, n: int, size: tuple[int, int] = (1024, 768)) -> list[Path]:
    """Photo-sized, hard-to-compress images (smooth colour gradients + fine noise), for the size budget."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype("int16")
    noise = rng.integers(-50, 50, (h, w, 3), dtype="int16")
    paths = []
    for i in range(n):
        base = np.stack([(xx * (i + 1)) % 256, (yy * 2 + i * 9) % 256, ((xx + yy) // 3) % 256], axis=-1)
        arr = np.clip(base + np.roll(noise, 37 * i, axis=1), 0, 255).astype("uint8")
        path = directory / f"photo_{i:03d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        paths.append(path)
    return paths


def expected_boxes(run: Path, threshold: float) -> int:
    """Boxes the gallery should draw with both toggles on: every gt box and every prediction >= threshold."""
    preds = json.loads((run / "eval" / "predictions.json").read_text())
    return sum(len(r["gt_boxes"]) + sum(s >= threshold for s in r["pred_scores"]) for r in preds["images"])
