"""What each part of the training recipe is worth, at a fixed number of steps (not of seconds).

    .venv/bin/python benchmarks/recipe_ablation.py [--epochs 6] [--variants '' ema=0.9998 label_smoothing=0.1]

Same seeded 70/15/15 split of ``../shared/data/trashnet_112_cls`` as benchmarks/budget_vs_ultralytics.py;
each variant trains lanner's defaults plus its overrides for the same epochs (so the same optimizer
steps, batches and augmentations: the accuracy does not depend on how busy the machine is), then is
scored on the test images: top-1, macro-F1, the worst class's recall, and the training images/s
(that one only means something on an otherwise idle machine). Results:
``benchmarks/results/recipe_ablation.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from lanner import api
from lanner.config import make_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget_vs_ultralytics import DEFAULT_DATA, scores, split_folders  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "recipe_ablation.json"


def parse_variant(variant: str) -> dict:
    return dict(kv.split("=", 1) for kv in variant.split(",") if kv)


def run_variant(root: Path, test: list[tuple[Path, str]], epochs: int, work: Path, variant: str) -> dict:
    overrides = parse_variant(variant)
    name = variant.replace("=", "-").replace(",", "_") or "defaults"
    config = make_config({"data": str(root), "run": str(work / name), "epochs": epochs, **overrides})
    start = time.perf_counter()
    run = api.train(config, Console(quiet=True), evaluate_after=False)
    train_s = time.perf_counter() - start
    rows = api.predict(run, [str(p) for p, _ in test], work / f"{name}.csv", Console(quiet=True), topk=1)
    history = [line.split(",") for line in (run / "history.csv").read_text().strip().splitlines()]
    speed = [float(r[history[0].index("images_per_s")]) for r in history[1:]]
    return {
        **scores([c for _, c in test], [r["label"] for r in rows]),
        "train_s": round(train_s, 1),
        "images_per_s": round(sum(speed) / len(speed), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--variants", nargs="*", default=["", "ema=0.9998"], metavar="KEY=VALUE[,...]")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    results = {"data": str(args.data), "epochs": args.epochs, "threads": torch.get_num_threads(), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        split = split_folders(args.data, work / "data")
        for variant in args.variants:
            results["runs"][variant or "defaults"] = run_variant(
                work / "data", split["test"], args.epochs, work, variant
            )
            print(variant or "defaults", results["runs"][variant or "defaults"], flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
