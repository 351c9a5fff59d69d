"""Per-class logit biases fitted on val for macro-F1: do they lift a trained classifier's test macro-F1?

    .venv/bin/python benchmarks/budget_vs_ultralytics.py --minutes 10 --peers --lanner '' --keep /tmp/keep10
    .venv/bin/python benchmarks/posthoc_bias.py /tmp/keep10 --out benchmarks/results/....json

Threshold moving for imbalanced classes: add a bias b_c to each class's log-probability before the
argmax, with b chosen on the val images to maximise macro-F1 (coordinate search over a grid, three
sweeps, ties to the smallest |b_c|), then score the test images with and without it. Paired: same
weights, same images. lanner's loss is already logit-adjusted for the class prior, so this measures
whether what is left of the imbalance is worth a fitted decision rule. Probabilities come through
lanner's own ``api.predict`` (top-k = every class, 4 decimals as predictions.csv writes them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from budget_vs_ultralytics import kept_arguments
from rich.console import Console
from sklearn.metrics import accuracy_score, f1_score

from lanner import api

GRID = np.linspace(-1.5, 1.5, 31)
SWEEPS = 3


def log_probs(ckpt: Path, files: list[Path], classes: list[str], work: Path) -> np.ndarray:
    rows = api.predict(
        ckpt, [str(p) for p in files], work / "bias-rows.csv", Console(quiet=True), topk=len(classes)
    )
    probs = np.zeros((len(files), len(classes)))
    for i, row in enumerate(rows):
        for item in row["topk"].split(";"):
            label, p = item.rsplit(":", 1)
            probs[i, classes.index(label)] = float(p)
    return np.log(probs + 1e-9)


def macro_f1(logits: np.ndarray, targets: np.ndarray, bias: np.ndarray) -> float:
    return float(f1_score(targets, (logits + bias).argmax(1), average="macro"))


def fit_bias(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    bias = np.zeros(logits.shape[1])
    for _ in range(SWEEPS):
        for c in range(len(bias)):
            trial = [np.where(np.arange(len(bias)) == c, v, bias) for v in GRID]
            bias = max(trial, key=lambda b: (macro_f1(logits, targets, b), -abs(b[c])))
    return bias


def scored(logits: np.ndarray, targets: np.ndarray, bias: np.ndarray) -> dict:
    return {
        "top1": round(float(accuracy_score(targets, (logits + bias).argmax(1))), 4),
        "macro_f1": round(macro_f1(logits, targets, bias), 4),
    }


def main() -> None:
    args, run = kept_arguments(__doc__.splitlines()[0])
    ckpt = run / "checkpoints" / "best.ckpt"
    classes = sorted(p.name for p in (args.kept / "data" / "test").iterdir())
    split = {}
    for name in ("val", "test"):
        files = sorted((args.kept / "data" / name).glob("*/*"))
        targets = np.array([classes.index(p.parent.name) for p in files])
        split[name] = (log_probs(ckpt, files, classes, args.kept), targets)
    bias = fit_bias(*split["val"])
    none = np.zeros(len(classes))
    results = {"run": run.name, "bias": dict(zip(classes, bias.round(2).tolist(), strict=True))}
    for name, (logits, targets) in split.items():
        results[name] = {"plain": scored(logits, targets, none), "biased": scored(logits, targets, bias)}
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
