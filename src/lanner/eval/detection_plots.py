"""Detection plots: confusion matrix and per-class precision/recall curves (PNG).

Figures are built with ``matplotlib.figure.Figure`` directly (Agg canvas), never pyplot: no global
state, no GUI backend, safe in worker threads and on headless machines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def _save(fig: Figure, path: Path) -> None:
    # The atomic writer hands us a ``.tmp`` path, so the format cannot come from the extension.
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")


def plot_confusion_matrix(matrix: np.ndarray, labels: list[str], path: Path) -> None:
    """Counts with rows = true class and columns = predicted class (background last)."""
    n = len(labels)
    size = max(4.0, 0.6 * n + 2)
    fig = Figure(figsize=(size, size * 0.9))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Detection confusion matrix")
    if n <= 30:  # beyond that the numbers are unreadable anyway
        threshold = matrix.max() / 2 if matrix.size and matrix.max() > 0 else 0
        for (row, col), value in np.ndenumerate(matrix):
            color = "white" if value > threshold else "black"
            ax.text(col, row, str(int(value)), ha="center", va="center", color=color, fontsize=8)
    _save(fig, path)


def plot_pr_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray] | None], per_class: dict[str, dict], path: Path
) -> None:
    """One precision/recall curve per class at IoU .5 (COCO's interpolated precision)."""
    fig = Figure(figsize=(6.5, 5))
    ax = fig.add_subplot()
    drawn = 0
    for name, curve in curves.items():
        if curve is None:  # no ground truth for this class: the curve is undefined
            continue
        recall, precision = curve
        ap50 = per_class.get(name, {}).get("ap50")
        label = f"{name} (AP50 {ap50:.3f})" if ap50 is not None else name
        ax.plot(recall, precision, label=label, linewidth=1.5)
        drawn += 1
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall at IoU 0.5")
    if 0 < drawn <= 25:  # a legend of more entries hides the curves; the CSV/metrics carry the APs
        ax.legend(loc="lower left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no ground truth to draw curves from", ha="center", va="center")
    ax.grid(alpha=0.3)
    _save(fig, path)
