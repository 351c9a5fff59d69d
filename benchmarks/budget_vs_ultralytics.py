"""Classification at equal wall-clock budgets: lanner's defaults vs Ultralytics YOLO11n-cls / YOLO26n-cls.

    .venv/bin/pip install ultralytics   # once; nothing else is downloaded
    .venv/bin/python benchmarks/budget_vs_ultralytics.py [--minutes 2 5 10] [--data DIR] [--peers yolo11n-cls]

The dataset (default ``../shared/data/trashnet_112_cls``: 2527 photos, 6 classes, imbalanced 4.3:1)
is split once, seeded and stratified, 70/15/15 into train/val/test class folders (hard links) that
both tools read. Each contender trains from random init for the budget on the same threads, one
after the other (lanner with ``--time``, Ultralytics with ``time=`` in hours, its yaml model), then
both are scored by the same code on the same test images: top-1 accuracy and macro-F1 (scikit-learn).
lanner's model is scored a second time with ``--tta`` (``tta``: the same weights, so the difference is
the views' alone) and a third from the last epoch's weights (``last``, beside ``best_epoch``: lanner
predicts with the checkpoint that scored best on val); each lanner row also records the input-size
rule's ``DATA_FACTOR`` as the run measured it (``data_factor``: the probe's model-only images/s over
the training loop's).
Results go to ``benchmarks/results/budget_vs_ultralytics.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from sklearn.metrics import accuracy_score, f1_score, recall_score

from lanner import api
from lanner.config import apply_overrides, make_config
from lanner.engine.checkpoint import load_checkpoint
from lanner.rundir import CheckpointMeta

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "trashnet_112_cls"
RESULTS = Path(__file__).resolve().parent / "results" / "budget_vs_ultralytics.json"
SPLITS = (("train", 0.70), ("val", 0.15), ("test", 0.15))


def split_folders(data: Path, out: Path, seed: int = 0) -> dict[str, list[tuple[Path, str]]]:
    """Hard-link every image into out/{train,val,test}/<class>/, stratified by class."""
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[tuple[Path, str]]] = {s: [] for s, _ in SPLITS}
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        order = rng.permutation(len(files))
        cut_train = int(round(len(files) * SPLITS[0][1]))
        cut_val = cut_train + int(round(len(files) * SPLITS[1][1]))
        for rank, i in enumerate(order):
            split = "train" if rank < cut_train else "val" if rank < cut_val else "test"
            target = out / split / folder.name / files[i].name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(files[i], target)
            chosen[split].append((target, folder.name))
    return chosen


def scores(truth: list[str], predicted: list[str]) -> dict:
    classes = sorted(set(truth))
    return {
        "top1": accuracy_score(truth, predicted),
        "macro_f1": f1_score(truth, predicted, labels=classes, average="macro", zero_division=0),
        "min_recall": float(
            recall_score(truth, predicted, labels=classes, average=None, zero_division=0).min()
        ),
    }


def kept_arguments(description: str) -> tuple[argparse.Namespace, Path]:
    """For scripts that score a kept run again: (arguments ``kept`` and ``--out``, the kept lanner run)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("kept", type=Path, help="a --keep folder of budget_vs_ultralytics.py")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    return args, next(p for p in args.kept.glob("lanner-*") if p.is_dir())


def run_lanner(
    root: Path, test: list[tuple[Path, str]], minutes: float, work: Path, overrides: dict | None = None
) -> dict:
    name = "-".join(f"{k}={v}" for k, v in (overrides or {}).items())
    base = {"data": str(root), "run": str(work / f"lanner-{minutes:g}m{name}"), "time": f"{minutes:g}m"}
    # as --set does: dotted keys (augment.rotate=10) nest, values parse as YAML scalars
    config = make_config(apply_overrides(base, [f"{k}={v}" for k, v in (overrides or {}).items()]))
    start = time.perf_counter()
    run = api.train(config, Console(quiet=True), evaluate_after=False)
    train_s = time.perf_counter() - start
    truth, files = [c for _, c in test], [str(p) for p, _ in test]
    rows = api.predict(run, files, work / "lanner.csv", Console(quiet=True), topk=1)
    # The same model scored again with --tta (4 views): paired, so its difference is not run noise.
    tta_rows = api.predict(run, files, work / "lanner-tta.csv", Console(quiet=True), topk=1, tta=True)
    # best.ckpt (picked on val, what lanner predicts with) against the last epoch's weights.
    last = run / "checkpoints" / "last.ckpt"
    last_rows = api.predict(last, files, work / "lanner-last.csv", Console(quiet=True), topk=1)
    last_ckpt = load_checkpoint(last)  # read once: its best epoch, and the size it trained at
    with (run / "history.csv").open() as f:
        history = list(csv.DictReader(f))
    cfg = {k: v for k, v in (line.split(": ", 1) for line in (run / "config.yaml").read_text().splitlines()
           if ": " in line)}  # fmt: skip
    return {
        **scores(truth, [r["label"] for r in rows]),
        "tta": scores(truth, [r["label"] for r in tta_rows]),
        "last": scores(truth, [r["label"] for r in last_rows]),
        "best_epoch": last_ckpt["train_state"]["best_epoch"],
        "epochs": len(history),
        "train_s": round(train_s, 1),
        "data_factor": measured_data_factor(CheckpointMeta.from_checkpoint(last_ckpt), cfg, history),
        "config": {k: v for k, v in cfg.items()
                   if k in ("model", "image_size", "batch_size", "balance", "lr", "augment")},
    }  # fmt: skip


def measured_data_factor(meta: CheckpointMeta, cfg: dict, history: list[dict]) -> dict:
    """The input-size rule's DATA_FACTOR as this run measured it: the probe's step time (model only,
    random pixels; timed now, on the idle machine) against the training loop's median images/s."""
    from lanner.models.classifiers import build_classifier
    from lanner.tasks.classify.budget_size import DATA_FACTOR, step_seconds
    from lanner.tasks.classify.setup import DEFAULT_BATCH

    size = int(meta.get("preprocessing")["image_size"])  # the size it trained at, chosen or not
    batch = int(cfg["batch_size"]) if cfg.get("batch_size", "null") != "null" else DEFAULT_BATCH
    model = build_classifier(cfg["model"], len(meta.classes))[0]
    probe_img_s = batch / step_seconds(model, size, batch, torch.device("cpu"))
    train_img_s = statistics.median(float(r["images_per_s"]) for r in history[1:] or history)
    return {
        "probe_img_s": round(probe_img_s, 1),
        "train_img_s": round(train_img_s, 1),
        "measured": round(probe_img_s / train_img_s, 2),
        "assumed": DATA_FACTOR,
    }


def run_ultralytics(root: Path, test, minutes: float, work: Path, model_yaml: str, imgsz: int) -> dict:
    from ultralytics import YOLO, settings
    from ultralytics.utils import torch_utils

    settings.update({"mlflow": False})  # it would log into the working directory's MLflow store
    # Ultralytics trains on os.cpu_count() - 1 threads (1 on a 2-core machine); both get the same.
    # Its optimizer=auto picks MuSGD for short runs since 8.4, whose bf16 Newton-Schulz step costs ~6 s
    # per batch on a CPU (5 img/s); it gets what auto picked before (AdamW, lr0 0.002 * 5 / (4 + nc)).
    torch_utils.NUM_THREADS = torch.get_num_threads()
    model = YOLO(model_yaml)
    num_classes = sum(p.is_dir() for p in (root / "train").iterdir())
    start = time.perf_counter()
    model.train(
        data=str(root), epochs=1000, time=minutes / 60, imgsz=imgsz, batch=32, device="cpu", workers=2,
        plots=False, project=str(work), name=f"{model_yaml}-{minutes:g}m", exist_ok=True, verbose=False,
        amp=False, seed=0, optimizer="AdamW", lr0=round(0.002 * 5 / (4 + num_classes), 6),
        momentum=0.9,
    )  # fmt: skip
    train_s = time.perf_counter() - start
    names = model.names
    predicted = []
    for i in range(0, len(test), 64):
        for r in model.predict(
            [str(p) for p, _ in test[i : i + 64]], imgsz=imgsz, device="cpu", verbose=False
        ):
            predicted.append(names[int(r.probs.top1)])
    epochs_file = work / f"{model_yaml}-{minutes:g}m" / "results.csv"
    epochs = len(epochs_file.read_text().strip().splitlines()) - 1 if epochs_file.exists() else None
    return {**scores([c for _, c in test], predicted), "epochs": epochs, "train_s": round(train_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--minutes", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    parser.add_argument("--peers", nargs="*", default=["yolo11n-cls.yaml", "yolo26n-cls.yaml"])
    parser.add_argument(
        "--imgsz", type=int, default=128, help="Ultralytics' input size (lanner picks its own)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", type=Path, help="work here and keep it (split, runs), not in a temp dir")
    parser.add_argument(
        "--lanner",
        nargs="*",
        default=[""],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="lanner variants to train (ablations), e.g. model=resnet18,image_size=128; '' = defaults",
    )
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    results = {"data": str(args.data), "threads": torch.get_num_threads(), "budgets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        split = split_folders(args.data, work / "data")
        results["images"] = {k: len(v) for k, v in split.items()}
        for minutes in args.minutes:
            row = {}
            for variant in args.lanner:
                overrides = dict(kv.split("=", 1) for kv in variant.split(",") if kv)
                key = f"lanner {variant}".strip()
                row[key] = run_lanner(work / "data", split["test"], minutes, work, overrides)
                print(minutes, key, row[key], flush=True)
            for peer in args.peers:
                row[peer] = run_ultralytics(work / "data", split["test"], minutes, work, peer, args.imgsz)
                print(minutes, peer, row[peer], flush=True)
            results["budgets"][f"{minutes:g}m"] = row
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
