"""LR range test (Smith 2015, as in fastai's ``lr_find``): where to aim the learning rate.

A throwaway copy of the run's model trains for a few hundred steps while the LR rises
exponentially from ``start_lr`` to ``end_lr``; the loss is recorded per step and smoothed with a
bias-corrected moving average. The loss first falls faster as the LR grows, then flattens and
blows up. Two readings are offered: the LR where the smoothed loss has made half of its fall (the
middle of the descent; robust to noise where a "steepest slope" rule is not) and a tenth of the LR
at the lowest smoothed loss (a conservative choice). The test stops when the smoothed loss exceeds
``diverge`` x its minimum.

Written here rather than taken from a library: Lightning's tuner needs a LightningModule and
torch-lr-finder a DataLoader and criterion, while lanner's tasks hand out their own batches and
losses (detection's is a dict from the model) and the LR must be set exactly as training sets it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from lanner.engine.plots import plt, save_figure
from lanner.engine.trainer import optimizer_step
from lanner.errors import ConfigError


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None  # where the smoothed loss has made half of its fall
    min_loss_lr: float  # LR at the lowest smoothed loss
    stop_reason: str  # "diverged" or "end"

    @property
    def conservative(self) -> float:
        return self.min_loss_lr / 10

    def to_csv(self) -> str:
        rows = zip(self.lrs, self.losses, self.smoothed, strict=True)
        return "lr,loss,smoothed_loss\n" + "".join(f"{a:.6g},{b:.6g},{c:.6g}\n" for a, b, c in rows)

    def to_dict(self) -> dict:
        return {
            "suggestion": self.suggestion,
            "min_loss_lr": self.min_loss_lr,
            "min_loss_lr_over_10": self.conservative,
            "stop_reason": self.stop_reason,
            "steps": len(self.lrs),
        }


def exponential_lrs(start_lr: float, end_lr: float, steps: int) -> np.ndarray:
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"--start-lr {start_lr:g} / --end-lr {end_lr:g}: need 0 < start < end")
    if steps < 5:
        raise ConfigError(f"--steps {steps}: an LR range test needs at least 5 steps")
    return np.geomspace(start_lr, end_lr, steps)


def smoothing_for(steps: int) -> float:
    """EMA factor whose window (1 / (1 - beta)) is ~5% of the test, within 0.8..0.98.

    fastai's fixed 0.98 averages over ~50 steps: over a 100-step test that lag spans 4 of the 8
    decades of LR and moves the curve's features to the right.
    """
    return min(0.98, max(0.8, 1 - 20 / steps))


def smooth(losses: Iterable[float], beta: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (the first values are not pulled to 0)."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def suggest(lrs: list[float], smoothed: list[float], min_drop: float = 0.02) -> float | None:
    """The first LR at which the smoothed loss has made half of its fall from the starting plateau
    to its minimum: the middle of the descent, where a sigmoid-like fall is steepest.

    A level crossing of the smoothed curve is robust to the step-to-step noise that makes a
    "steepest slope" rule pick a random dip. None when the loss falls by less than ``min_drop``
    of its starting level (nothing learnt in the range).
    """
    values = np.asarray(smoothed)
    lowest = int(np.argmin(values))
    plateau = float(np.median(values[: max(1, len(values) // 10)]))
    drop = plateau - float(values[lowest])
    if lowest < 2 or drop <= min_drop * abs(plateau):
        return None
    crossed = np.flatnonzero(values[: lowest + 1] <= plateau - drop / 2)
    return float(lrs[int(crossed[0])])


def range_test(
    step: Callable[[object, float], float],
    batches: Iterator,
    lrs: np.ndarray,
    diverge: float = 4.0,
    on_step: Callable[[int, float, float], None] | None = None,
) -> LRFindResult:
    """Run ``step(batch, lr) -> loss`` over ``batches`` at each LR of ``lrs`` until the loss diverges."""
    seen_lrs: list[float] = []
    losses: list[float] = []
    reason = "end"
    beta = smoothing_for(len(lrs))
    for i, lr in enumerate(lrs):
        loss = step(next(batches), float(lr))
        if not math.isfinite(loss):
            reason = "diverged"
            break
        seen_lrs.append(float(lr))
        losses.append(loss)
        if on_step is not None:
            on_step(i, float(lr), loss)
        smoothed = smooth(losses, beta)
        if len(losses) > 5 and smoothed[-1] > diverge * min(smoothed):
            reason = "diverged"
            break
    if len(losses) < 2:
        raise FloatingPointError(
            f"the loss was not finite from the first step (LR {lrs[0]:g}): lower --start-lr"
        )
    smoothed = smooth(losses, beta)
    return LRFindResult(
        seen_lrs,
        losses,
        smoothed,
        suggest(seen_lrs, smoothed),
        seen_lrs[int(np.argmin(smoothed))],
        reason,
    )


def cycle_epochs(train_batches: Callable[[int], Iterable]) -> Iterator:
    """Batches of epoch 0, 1, 2, ... for as long as the test asks (short datasets wrap around)."""
    epoch = 0
    while True:
        yielded = False
        for batch in train_batches(epoch):
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("the training split has no batches")
        epoch += 1


def plot_lr_find(result: LRFindResult, path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(result.lrs, result.losses, color="#9aa4b2", lw=1, label="loss per step")
    ax.plot(result.lrs, result.smoothed, color="#1f6feb", lw=2, label="smoothed")
    if result.suggestion is not None:
        ax.axvline(result.suggestion, color="#1a7f37", ls="--", label=f"suggested {result.suggestion:.2g}")
    ax.axvline(result.conservative, color="#bf8700", ls=":", label=f"min/10 {result.conservative:.2g}")
    ax.set_xscale("log")
    low, high = min(result.smoothed), max(result.smoothed[: max(2, len(result.smoothed) // 2)])
    ax.set_ylim(low - 0.1 * (high - low + 1e-12), high + 0.3 * (high - low + 1e-12))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("LR range test")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def training_step_fn(
    task, model: torch.nn.Module, optimizer, autocast, scaler
) -> Callable[[object, float], float]:
    """One optimizer step at a given LR, exactly as training takes it (a non-finite loss: no update)."""

    def step(batch, lr: float) -> float:
        return optimizer_step(task, model, optimizer, scaler, autocast, batch, lr)[0]

    return step
