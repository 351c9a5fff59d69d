r"""`lanner review` against known label noise: how many of the corrupted labels it ranks first.

    .venv/bin/python benchmarks/label_noise.py [--task classify|detect] [--time 20m] [--folds 3]
    .venv/bin/python benchmarks/label_noise.py --limit 150 --epochs 2 --folds 2 --model shallownet \
        --image-size 32   # a smoke run of a minute or two

classify: ``../shared/data/trashnet_112_cls`` hard-linked into class folders with ``--noise`` (5%) of
the images moved to another class at random (seeded). detect: ``../shared/data/rbc_roboflow_coco``
(train + valid) with ``--noise`` (10%) of its boxes deleted. A run is trained on the noisy data
(``--time`` or ``--epochs``), then reviewed with K folds (``--time``: all folds together) and with
``--folds 0``. Scored, with N = the number of corrupted items: precision among the top N rows of
label_issues.csv, recall within the top 2N, and the time each review took (a deleted box counts as
found by a ``missing_box`` row at IoU >= .5 with it). Results: ``benchmarks/results/label_noise.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from lanner import api
from lanner.config import make_config
from lanner.data.formats import read_dataset, write_dataset
from lanner.data.geometry import box_iou
from lanner.data.records import Dataset
from lanner.eval.label_issues import read_issues

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = {"classify": SHARED / "trashnet_112_cls", "detect": SHARED / "rbc_roboflow_coco"}
RESULTS = Path(__file__).resolve().parent / "results" / "label_noise.json"


def noisy_folders(data: Path, out: Path, noise: float, seed: int, limit: int | None) -> dict[str, str]:
    """Class folders under ``out`` (hard links), ``noise`` of the images in a wrong class: path -> true."""
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in data.iterdir() if p.is_dir())
    files = sorted(f for c in classes for f in (data / c).iterdir() if f.suffix.lower() in (".jpg", ".png"))
    if limit:
        files = [files[i] for i in np.sort(rng.choice(len(files), min(limit, len(files)), replace=False))]
    flipped = set(rng.choice(len(files), max(1, round(noise * len(files))), replace=False).tolist())
    truth = {}
    for i, src in enumerate(files):
        given = src.parent.name
        if i in flipped:
            given = rng.choice([c for c in classes if c != src.parent.name])
        target = out / given / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, target)
        if i in flipped:
            truth[str(target)] = src.parent.name
    return truth


def noisy_boxes(data: Path, out: Path, noise: float, seed: int, limit: int | None) -> list[tuple[str, list]]:
    """The train+valid images as COCO under ``out``, ``noise`` of the train boxes deleted: (path, box)."""
    rng = np.random.default_rng(seed)
    dataset = read_dataset(data)
    records = [r for r in dataset.records if r.split in ("train", "val")][: limit or None]
    slots = [(i, b) for i, r in enumerate(records) if r.split == "train" for b in range(len(r.boxes))]
    gone = {slots[k] for k in rng.choice(len(slots), max(1, round(noise * len(slots))), replace=False)}
    deleted = [(str(records[i].path), records[i].boxes[b].tolist()) for i, b in sorted(gone)]
    for i, r in enumerate(records):
        keep = np.array([(i, b) not in gone for b in range(len(r.boxes))], dtype=bool)
        r.boxes, r.labels, r.iscrowd = r.boxes[keep], r.labels[keep], r.iscrowd[keep]
    write_dataset(Dataset(dataset.classes, records, "detect", format="coco"), "coco", out)
    return deleted


def reviewed(corrupted, run: Path, task: str):
    """The corrupted items in the reviewed split (train): a flipped image the run put in val is not."""
    if task != "classify":
        return corrupted
    data = Path(yaml.safe_load((run / "config.yaml").read_text())["data"])
    with (run / "split.csv").open() as f:  # paths relative to the dataset's root
        train = {str(data / row["path"]) for row in csv.DictReader(f) if row["split"] == "train"}
    return {p: c for p, c in corrupted.items() if p in train}


def _same_box(row: dict, path: str, box: list) -> bool:
    if row["kind"] != "missing_box" or Path(path).name != Path(row["path"]).name:
        return False
    found = np.array([[row["x1"], row["y1"], row["x2"], row["y2"]]], dtype=float)
    return box_iou(np.array([box], dtype=float), found)[0, 0] >= 0.5


def hits(rows: list[dict], corrupted, task: str) -> list[bool]:
    """Per row: does it point at a corrupted item (each corrupted item counted once)?"""
    found, out = set(), []
    for r in rows:
        if task == "classify":
            key = r["path"] if r["path"] in corrupted else None
        else:
            key = next((k for k, (p, box) in enumerate(corrupted) if _same_box(r, p, box)), None)
        out.append(key is not None and key not in found)
        found.add(key)
    return out


def score(run: Path, corrupted, task: str, seconds: float) -> dict:
    rows = read_issues(run / "review" / "label_issues.csv")
    n, flags = len(corrupted), hits(rows, corrupted, task)
    return {
        "corrupted": n, "flagged": len(rows), "seconds": round(seconds, 1),
        "precision_at_n": sum(flags[:n]) / n, "recall_at_2n": sum(flags[: 2 * n]) / n,
        "recall_all_flagged": sum(flags) / n,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(DATA), default="classify")
    parser.add_argument("--noise", type=float, help="fraction corrupted (default: 5%% classify, 10%% detect)")
    parser.add_argument("--time", default="20m", help="training budget of the run, and of all folds together")
    parser.add_argument("--epochs", type=int, help="instead of --time for the run")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--limit", type=int, help="use only this many images (smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="default: lanner's default for the device")
    parser.add_argument("--image-size", type=int)
    args = parser.parse_args()
    noise = args.noise or (0.05 if args.task == "classify" else 0.10)
    work = Path(tempfile.mkdtemp(prefix="label-noise-"))
    make = noisy_folders if args.task == "classify" else noisy_boxes
    corrupted = make(DATA[args.task], work / "data", noise, args.seed, args.limit)
    budget = {"epochs": args.epochs} if args.epochs else {"time": args.time}
    budget.update({k: v for k, v in (("model", args.model), ("image_size", args.image_size)) if v})
    config = make_config({"data": str(work / "data"), "run": str(work / "run"), "seed": args.seed, **budget})
    run = api.train(config, evaluate_after=False)
    corrupted = reviewed(corrupted, run, args.task)
    result = {"task": args.task, "noise": noise, "data": str(DATA[args.task]), **budget, "limit": args.limit}
    for folds in (args.folds, 0):
        start = time.monotonic()
        api.review(run, folds=folds, time=None if args.epochs else args.time, report=False)
        result[f"folds_{folds}"] = score(run, corrupted, args.task, time.monotonic() - start)
        print(json.dumps(result[f"folds_{folds}"]))
    RESULTS.parent.mkdir(exist_ok=True)
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps({**saved, args.task: result}, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
