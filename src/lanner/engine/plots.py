"""Training plots written with matplotlib's Agg backend (no display needed), atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lanner._io import write_atomic  # noqa: E402


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    fig.tight_layout()
    write_atomic(path, lambda p: fig.savefig(p, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png"))
    plt.close(fig)
    return Path(path)


def plot_curves(history: list[dict], segments: list[dict], path: str | Path) -> Path:
    """Loss, validation metrics and LR per epoch, with every resume point marked."""
    epochs = [int(h["epoch"]) for h in history]
    metric_keys = [
        k for k in (history[0] if history else {}) if k.startswith(("val_", "train_")) and k != "val_loss"
    ]
    metric_keys = [k for k in metric_keys if k != "train_loss"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    loss_ax, metric_ax, lr_ax = axes
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        ys = [_num(h.get(key)) for h in history]
        if any(y is not None for y in ys):
            loss_ax.plot(epochs, ys, style, marker="o", ms=3, label=key)
    for key in metric_keys:
        style = "--" if key.startswith("train_") else "-"  # train dashed beside its val line
        metric_ax.plot(epochs, [_num(h.get(key)) for h in history], style, marker="o", ms=3, label=key)
    lr_ax.plot(epochs, [_num(h.get("lr")) for h in history], marker="o", ms=3, color="#8250df", label="lr")
    for ax, title in zip(
        axes, ("loss", "metrics: val and train (dashed)", "learning rate (end of epoch)"), strict=True
    ):
        for seg in segments[1:]:
            ax.axvline(seg["start_epoch"] + 0.5, color="#d1242f", ls="--", lw=1)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if segments[1:]:
        loss_ax.text(
            0.01, 0.01, "red dashes: resume points", transform=loss_ax.transAxes, fontsize=7, color="#d1242f"
        )
    return save_figure(fig, path)


def _num(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
