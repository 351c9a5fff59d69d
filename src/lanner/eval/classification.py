"""Classification metrics: accuracy, top-k, per-class precision/recall/F1/support, confusion matrix.

The confusion matrix is one ``bincount``; everything else is derived from it in a few lines so
the numbers are explainable. Zero divisions give 0, as scikit-learn's default does, and a test
checks the per-class report equals ``sklearn.metrics.classification_report`` on the same predictions.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from lanner._io import write_json, write_text
from lanner.engine.plots import plt, save_figure
from lanner.rundir import RunDir


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b != 0)


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[C, C] counts of (true class, predicted class): row = the truth, as scikit-learn's."""
    pairs = targets.long() * num_classes + preds.long()  # [N] one cell index per image
    return torch.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(
    probs: torch.Tensor, targets: torch.Tensor, classes: list[str], thresholds: np.ndarray | None = None
) -> dict:
    """``probs`` [N, C] scores, ``targets`` [N] class indices -> the metrics.json content.

    ``thresholds`` [C] (chosen on val, :mod:`lanner.eval.thresholds`) are recorded per class: the
    score below which ``lanner predict`` calls a top class not confident. The table itself is of
    the top class, as accuracy is: a classifier always names one class."""
    n_cls = len(classes)
    preds = probs.argmax(1)
    cm = confusion_matrix(preds, targets, n_cls).cpu().numpy().astype(np.int64)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1).astype(np.float64)
    predicted = cm.sum(0).astype(np.float64)
    precision, recall = _safe_div(tp, predicted), _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = support.sum()
    metrics = {
        "task": "classify",
        "num_images": int(len(targets)),
        "classes": list(classes),
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            | ({"threshold": float(thresholds[i])} if thresholds is not None else {})
            for i, name in enumerate(classes)
        },
        "macro_avg": {
            "precision": float(precision.mean()),
            "recall": float(recall.mean()),
            "f1": float(f1.mean()),
            "support": int(total),
        },
        "weighted_avg": {
            k: float((v * support).sum() / total) if total else 0.0
            for k, v in (("precision", precision), ("recall", recall), ("f1", f1))
        }
        | {"support": int(total)},
        "confusion_matrix": cm.tolist(),
    }
    if n_cls >= 5:
        top5 = probs.topk(5, dim=1).indices
        metrics["top5_accuracy"] = float((top5 == targets[:, None]).any(1).float().mean())
    return metrics


def format_report(metrics: dict) -> str:
    """A plain-text report in the layout of scikit-learn's classification_report."""
    width = max(12, *(len(c) for c in metrics["classes"]))
    lines = [f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}", ""]
    for name, m in metrics["per_class"].items():
        lines.append(
            f"{name:>{width}} {m['precision']:9.4f} {m['recall']:9.4f} {m['f1']:9.4f} {m['support']:9d}"
        )
    lines.append("")
    lines.append(f"{'accuracy':>{width}} {'':9} {'':9} {metrics['accuracy']:9.4f} {metrics['num_images']:9d}")
    for key, label in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        m = metrics[key]
        lines.append(
            f"{label:>{width}} {m['precision']:9.4f} {m['recall']:9.4f} {m['f1']:9.4f} {m['support']:9d}"
        )
    if "top5_accuracy" in metrics:
        lines.append(f"{'top-5 accuracy':>{width}} {metrics['top5_accuracy']:9.4f}")
    worst = min(metrics["per_class"].items(), key=lambda kv: kv[1]["recall"], default=None)
    if worst is not None:  # what accuracy hides on imbalanced data
        lines.append(f"{'worst recall':>{width}} {worst[1]['recall']:9.4f} ({worst[0]})")
    return "\n".join(lines) + "\n"


def write_confusion_matrix(cm: list[list[int]], classes: list[str], out_dir: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["true \\ predicted", *classes])
    for name, row in zip(classes, cm, strict=True):
        w.writerow([name, *row])
    write_text(out_dir / "confusion_matrix.csv", buf.getvalue())
    _plot_confusion(np.array(cm), classes, out_dir / "confusion_matrix.png")


def _plot_confusion(cm: np.ndarray, classes: list[str], path: Path) -> None:
    n = len(classes)
    size = min(14, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90, fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        str(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (colour: fraction of the true class)")
    save_figure(fig, path)


def write_classification_outputs(metrics: dict, items: list[dict], run: RunDir, split: str | None) -> None:
    """metrics.json, eval/{confusion_matrix.csv,png, classification_report.txt, predictions.json}."""
    metrics, out_dir = {**metrics, "split": split}, run.eval
    write_json(run.metrics, metrics)
    write_confusion_matrix(metrics["confusion_matrix"], metrics["classes"], out_dir)
    write_text(out_dir / "classification_report.txt", format_report(metrics))
    write_json(
        run.eval_predictions,
        {"task": "classify", "classes": metrics["classes"], "split": split, "images": items},
    )
