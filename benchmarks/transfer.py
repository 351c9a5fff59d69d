"""Transfer learning at equal wall-clock budgets: from scratch vs fine-tuning a lanner run trained on
another dataset vs a linear probe of that run's features.

    flock /tmp/bench.lock .venv/bin/python benchmarks/transfer.py [--time 1m] [--source-time 2m]

The source run is trained by lanner on ``sign_language_digits_cls`` (photos of hands, 10 classes)
for ``--source-time``. The target (default ``trashnet_112_cls``: 2527 photos of waste, 6 classes) is
split once, seeded and stratified, 70/15/15 into train/val/test class folders (hard links). On it:
(a) ``lanner train --time T`` from random init, (b) the same with ``--pretrained SOURCE_RUN`` (class
surgery: all 6 target classes new, the backbone from the source), (c) ``lanner probe --pretrained
SOURCE_RUN`` (pooled features + scikit-learn logistic regression; it takes what it takes, usually
far less than T). The model and input size are the same for all three (``--model``,
``--image-size``). All are scored by the same code on the same test images (scikit-learn).
Results go to ``benchmarks/results/transfer.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from budget_vs_ultralytics import scores, split_folders
from rich.console import Console

from lanner import api
from lanner.config import make_config
from lanner.engine.checkpoint import load_checkpoint

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results" / "transfer.json"
QUIET = Console(quiet=True)


def _config(data: Path, run: Path, args, **kw):
    base = {"data": str(data), "run": str(run), "model": args.model, "image_size": args.image_size}
    return make_config(base | {"seed": args.seed} | kw)


def _score(run: Path, test: list[tuple[Path, str]], seconds: float, work: Path) -> dict:
    """Test-set scores; ``seconds``: the whole call (image decoding included), ``training_s``: the
    trainer's own wall clock (what ``--time`` bounds; None for the probe)."""
    rows = api.predict(run, [str(p) for p, _ in test], work / f"{run.name}.csv", QUIET, topk=1)
    history = run / "history.csv"
    epochs = len(history.read_text().strip().splitlines()) - 1 if history.exists() else None
    state = load_checkpoint(run / "checkpoints" / "last.ckpt").get("train_state") if epochs else None
    training = round(state["wall_seconds"], 1) if state else None
    return {**scores([c for _, c in test], [r["label"] for r in rows]), "seconds": round(seconds, 1),
            "training_s": training, "epochs": epochs}  # fmt: skip


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_all(args, work: Path) -> dict:
    source, source_s = _timed(
        lambda: api.train(
            _config(args.source, work / "source", args, time=args.source_time), QUIET, evaluate_after=False
        )
    )
    with open(source / "history.csv") as f:
        source_acc = max(float(row["val_acc"]) for row in csv.DictReader(f))
    split = split_folders(args.data, work / "data", seed=args.seed)
    data, test = work / "data", split["test"]
    results = {"source_run_s": round(source_s, 1), "source_best_val_acc": source_acc, "methods": {}}
    scratch, s = _timed(
        lambda: api.train(_config(data, work / "scratch", args, time=args.time), QUIET, evaluate_after=False)
    )
    results["methods"]["(a) from scratch"] = _score(scratch, test, s, work)
    tuned_cfg = _config(data, work / "finetuned", args, time=args.time, pretrained=str(source))
    tuned, s = _timed(lambda: api.train(tuned_cfg, QUIET, evaluate_after=False))
    results["methods"]["(b) --pretrained SOURCE_RUN"] = _score(tuned, test, s, work)
    probe_cfg = _config(data, work / "probe", args, pretrained=str(source))
    probe, s = _timed(lambda: api.probe(probe_cfg, QUIET, report=False))
    results["methods"]["(c) probe --pretrained SOURCE_RUN"] = _score(probe, test, s, work)
    results["images"] = {k: len(v) for k, v in split.items()}
    return results


def table(results: dict) -> str:
    lines = [
        "| method | test accuracy | test macro-F1 | seconds (all) | seconds (trainer) | epochs |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results["methods"].items():
        epochs = r["epochs"] if r["epochs"] is not None else "-"
        trainer = f"{r['training_s']:.0f}" if r["training_s"] is not None else "-"
        lines.append(
            f"| {name} | {r['top1']:.3f} | {r['macro_f1']:.3f} | {r['seconds']:.0f} | {trainer} | {epochs} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "trashnet_112_cls")
    parser.add_argument("--source", type=Path, default=SHARED / "sign_language_digits_cls" / "Dataset")
    parser.add_argument("--time", default="1m", help="budget of (a) and (b)")
    parser.add_argument("--source-time", default="2m", help="budget of the source run")
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    with tempfile.TemporaryDirectory() as tmp:
        results = run_all(args, Path(tmp))
    results |= {"data": str(args.data), "source": str(args.source), "time": args.time,
                "source_time": args.source_time, "model": args.model, "image_size": args.image_size,
                "threads": torch.get_num_threads()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(table(results))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
