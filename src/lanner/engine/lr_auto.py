"""The LR range test on a session's data and model: ``lanner lr-find`` and ``train --lr auto``."""

from __future__ import annotations

import copy
import time

import torch
from rich.console import Console

from lanner._io import write_json, write_text
from lanner._progress import progress_bar
from lanner.config import TrainConfig
from lanner.engine import distributed
from lanner.engine.lr_find import (
    LRFindResult,
    cycle_epochs,
    exponential_lrs,
    plot_lr_find,
    range_test,
    training_step_fn,
)
from lanner.engine.session import Session
from lanner.engine.setup import DEFAULT_LR, build_optimizer
from lanner.models.devices import autocast_for
from lanner.rundir import RunDir

RANGE_TEST_STEPS = 100  # --lr auto's range test: fewer when the loss diverges first


def run_range_test(
    s: Session, model, start_lr: float, end_lr: float, steps: int
) -> tuple[LRFindResult, dict]:
    """Run the LR range test on ``model`` (trained in place), write its files in the run directory;
    returns the result and the summary written to lr_find.json."""
    config, task = s.config, s.prepared.task
    optimizer = build_optimizer(model, config, start_lr)
    scaler = torch.amp.GradScaler(s.device.type, enabled=s.precision == "16-mixed")
    step = training_step_fn(task, model, optimizer, lambda: autocast_for(s.device, s.precision), scaler)
    s.console.print(
        f"LR range test: {steps} steps of batch {s.prepared.batch_size}, LR {start_lr:g} -> {end_lr:g} "
        f"(exponential), optimizer {config.optimizer}, device {s.device}, precision {s.precision}"
    )
    model.train()
    with progress_bar("LR range test", steps, s.console) as advance_to:
        result = range_test(
            step,
            cycle_epochs(task.train_batches),
            exponential_lrs(start_lr, end_lr, steps),
            on_step=lambda i, lr, loss: advance_to(i + 1),
        )
    write_text(s.run.lr_find_csv, result.to_csv())
    summary = {**result.to_dict(), "start_lr": start_lr, "end_lr": end_lr, "optimizer": config.optimizer}
    write_json(s.run.lr_find_json, summary)
    plot_lr_find(result, s.run.lr_find_plot)
    return result, summary


def choose_lr(s: Session) -> float:
    """``--lr auto``: an LR range test on a copy of the fresh model picks the run's LR (process 0
    runs it, the others are told); the chosen number replaces "auto" in config.yaml. Returns the
    seconds it took (process 0's): a ``--time`` budget pays for them."""
    lr, started = None, time.perf_counter()
    if s.dist.is_main:
        result, _ = run_range_test(s, copy.deepcopy(s.prepared.model), 1e-7, 10.0, RANGE_TEST_STEPS)
        found = result.suggestion is not None
        lr = result.suggestion if found else DEFAULT_LR[s.config.optimizer]
        how = "from the LR range test" if found else "the default: the loss never fell"
        s.console.print(f"--lr auto: {lr:.2g} ({how}; curve in {s.run.lr_find_plot})")
    lr, seconds = distributed.broadcast((lr, time.perf_counter() - started), s.dist)
    s.config = s.config.model_copy(update={"lr": float(lr)})
    if s.dist.is_main:
        write_text(s.run.config, s.config.to_yaml())
    return seconds


def print_lr_find(console: Console, config: TrainConfig, result: LRFindResult, run: RunDir) -> None:
    stop = "the loss diverged" if result.stop_reason == "diverged" else "end of the range"
    console.print(
        f"{len(result.lrs)} steps, stopped at LR {result.lrs[-1]:.3g} ({stop}); "
        f"lowest smoothed loss {min(result.smoothed):.4f} at LR {result.min_loss_lr:.3g}"
    )
    if result.suggestion is None:
        console.print(
            "[yellow]the loss never fell: try a wider range (--start-lr / --end-lr) or more --steps[/]"
        )
    else:
        console.print(
            f"suggested peak LR: [bold]{result.suggestion:.2g}[/] (the loss half way down its fall); "
            f"conservative: {result.conservative:.2g} (a tenth of the LR at the lowest loss)"
        )
        console.print(f"  lanner train {config.data} --lr {result.suggestion:.2g}")
    console.print(f"curve: {run.lr_find_plot}  numbers: {run.lr_find_csv}")
