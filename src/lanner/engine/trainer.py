"""The one training loop every task goes through.

A task (classification, detection) supplies batches, a loss and a validation pass; the trainer
owns everything else: LR from the run's schedule segments, mixed precision, history.csv and curves
written every epoch, last/best checkpoints, early stopping, a wall-clock budget, and a resumable
checkpoint on Ctrl-C or SIGTERM. An epoch is always one full pass over the training set.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lanner.engine import distributed
from lanner.engine.callbacks import Callback
from lanner.engine.checkpoint import save_checkpoint
from lanner.engine.history import overfitting_start, write_history, write_segments
from lanner.engine.plots import plot_curves
from lanner.engine.schedules import Segment, lr_at
from lanner.errors import Interrupted
from lanner.models.devices import autocast_for
from lanner.models.weights import FreezePlan, apply_freeze, keep_frozen_norms
from lanner.rundir import CheckpointMeta, RunDir


class TrainTask(Protocol):
    """What a task gives the trainer. Batches of one epoch come in a seeded order (resumable mid-epoch)."""

    monitor: str  # default metric for best checkpoint / early stopping, e.g. "val_acc"
    num_train_images: int
    batch_size: int

    def steps_per_epoch(self) -> int: ...
    def train_batches(self, epoch: int, skip: int = 0): ...
    def training_step(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, int]: ...
    def validate(self, model: torch.nn.Module) -> dict[str, float]: ...
    def meta(self) -> dict: ...


@dataclass
class TrainState:
    """The part of a run that a checkpoint restores (besides weights and optimizer)."""

    total_epochs: int
    segments: list[Segment]
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken in the whole run
    step_in_epoch: int = 0  # steps of the unfinished epoch (after an interruption)
    # The unfinished epoch's loss so far (sum of loss x images, and images, over every process), so
    # that its train_loss after a resume covers the whole epoch. Absent from older checkpoints: 0.
    partial_loss_sum: float = 0.0
    partial_images: int = 0
    history: list[dict] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    monitor: str = "val_loss"
    patience: int | None = None
    train_seconds: float = 0.0  # time in training steps
    wall_seconds: float = 0.0  # everything: training, validation, checkpoints and plots (the --time budget)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "segments"}
        d["segments"] = [s.to_dict() for s in self.segments]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        d = dict(d)
        d["segments"] = [Segment.from_dict(s) for s in d["segments"]]
        return cls(**d)


def optimizer_step(task, model, optimizer, scaler, autocast, batch, lr: float) -> tuple[float, int]:
    """One training step at ``lr`` (scaled per parameter group by its ``lr_scale``): the loss and the
    batch's image count. A non-finite loss is returned without a backward pass or an update."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer.zero_grad(set_to_none=True)
    with autocast():
        loss, n = task.training_step(model, batch)
    if torch.isfinite(loss):
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.item(), n


def minimise(metric: str) -> bool:
    return "loss" in metric


class _StopFlag:
    """First Ctrl-C/SIGTERM asks for a clean stop after the current step; a second one aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers, no clean stop
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class RunContext:
    """Where a run trains and who hears of it: its directory, device, precision, console, processes."""

    run_dir: Path
    device: torch.device
    precision: str = "32"
    console: Console = field(default_factory=Console)
    dist: distributed.Distributed = distributed.SINGLE


@dataclass
class TrainSettings:
    """How this stretch of training runs beyond the schedule: the checkpoint's identity (model name,
    config), a wall-clock budget, and what is frozen (``--freeze``) for how many first epochs."""

    identity: dict
    time_budget_s: float | None = None
    freeze: FreezePlan | None = None


class Trainer:
    def __init__(
        self,
        *,
        task: TrainTask,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        state: TrainState,
        context: RunContext,
        settings: TrainSettings,
        callbacks: Callback | None = None,
    ) -> None:
        """``model`` may be DDP-wrapped (``context.dist`` enabled); ``task`` then hands out this
        process's share."""
        self.task, self.model, self.optimizer, self.state = task, model, optimizer, state
        self.raw_model = distributed.unwrap(model)  # what is validated and saved
        self.dist, self.console = context.dist, context.console
        self.callbacks = callbacks or Callback()  # told of every epoch on process 0
        self.run, self.device, self.precision = RunDir(context.run_dir), context.device, context.precision
        self.extra_checkpoint = settings.identity
        self.time_budget_s = settings.time_budget_s
        self.freeze, self._freeze_told = settings.freeze, False
        self._overfitting_told = False
        device, precision = self.device, self.precision
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
        self.steps_per_epoch = task.steps_per_epoch()

    # ----------------------------------------------------------------------------------------- loop
    def fit(self) -> TrainState:
        st = self.state
        with _StopFlag() as stop:
            while st.epoch < st.total_epochs:
                epoch_start = time.perf_counter()
                self._set_freeze(st.epoch)
                train_loss = self._train_epoch(stop)
                if self._stop_agreed(stop):
                    st.wall_seconds += time.perf_counter() - epoch_start
                    if self.dist.is_main:
                        self._save("last")
                    raise Interrupted(st.epoch, st.step_in_epoch)
                done = self._end_epoch(train_loss, epoch_start)
                if done:
                    break
        return st

    def _train_epoch(self, stop: _StopFlag) -> float:
        st, model = self.state, self.model
        model.train()
        keep_frozen_norms(self.raw_model)  # frozen BatchNorm keeps its running statistics
        start, seen, loss_sum, loss_n = time.perf_counter(), 0, 0.0, 0
        epoch_start_step = st.step_in_epoch
        with self._progress(st.epoch + 1) as (progress, bar):
            progress.update(bar, completed=st.step_in_epoch)
            for batch in self.task.train_batches(st.epoch, skip=st.step_in_epoch):
                loss, n = self._step(batch)
                loss_sum, loss_n, seen = loss_sum + loss * n, loss_n + n, seen + n
                st.step += 1
                st.step_in_epoch += 1
                progress.update(bar, advance=1, loss=loss)
                self._maybe_fit_time_budget(start, st.step_in_epoch - epoch_start_step)
                if self._stop_agreed(stop):
                    break
        elapsed = time.perf_counter() - start
        st.train_seconds += elapsed
        # Every process's losses and images count (sums over the group; unchanged for one process).
        loss_sum, loss_n, seen = distributed.sum_on_device([loss_sum, loss_n, seen], self.dist, self.device)
        self._epoch_speed = (seen / elapsed if elapsed > 0 else 0.0, elapsed)
        # Added to what the epoch saw before an interruption: kept if this one is interrupted too.
        st.partial_loss_sum += float(loss_sum)
        st.partial_images += int(loss_n)
        return st.partial_loss_sum / max(st.partial_images, 1)

    def _stop_agreed(self, stop: _StopFlag) -> bool:
        """Whether to stop now; with several processes, all stop after the same step (or none)."""
        return distributed.any_process(stop.requested, self.dist, self.device)

    def _step(self, batch) -> tuple[float, int]:
        lr = lr_at(self.state.segments, self.state.step)
        loss, n = optimizer_step(
            self.task, self.model, self.optimizer, self.scaler, self._autocast, batch, lr
        )
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss} at epoch {self.state.epoch + 1}, step {self.state.step}: "
                "the learning rate is probably too high (see `lanner schedule` / `lanner lr-find`)"
            )
        return loss, n

    def _end_epoch(self, train_loss: float, epoch_start: float) -> bool:
        """Validate, record, checkpoint; True when training should stop early."""
        st = self.state
        st.epoch += 1
        st.step_in_epoch, st.partial_loss_sum, st.partial_images = 0, 0.0, 0
        images_per_s, epoch_time = self._epoch_speed
        self.model.eval()
        metrics = {}
        if self.dist.is_main:  # the others wait for its metrics, so every process decides alike
            with torch.no_grad(), self._autocast():
                metrics = self.task.validate(self.raw_model)
        metrics = distributed.broadcast(metrics, self.dist)
        row = {
            "epoch": st.epoch,
            "segment": st.segments[-1].index,
            "lr": lr_at(st.segments, max(st.step - 1, 0)),
            "train_loss": train_loss,
            **metrics,
            "epoch_time_s": round(epoch_time, 3),
            "images_per_s": round(images_per_s, 2),
        }
        st.history.append(row)
        improved = self._update_best(metrics)
        # The wall time of this epoch so far (the checkpoint written next is the only part left out).
        self._epoch_wall = time.perf_counter() - epoch_start
        st.wall_seconds += self._epoch_wall
        self._refit_time_budget()
        if self.dist.is_main:
            self._write_outputs(improved)
            self.callbacks.on_epoch_end(row)
        self._print_epoch(row, improved)
        self._note_overfitting()
        return self._should_stop()

    def _note_overfitting(self) -> None:
        """Say once when val stopped improving while the same metric on training images kept improving."""
        found = overfitting_start(self.state.history, self.state.monitor)
        if found is None or self._overfitting_told:
            return
        self._overfitting_told = True
        self.console.print(
            f"[yellow]over-fitting[/] from epoch {found['epoch']}: {found['monitor']} has not improved since "
            f"epoch {found['best_epoch']} while {found['train_metric']} kept improving "
            "(more data, more augmentation or fewer epochs may help)"
        )

    # ------------------------------------------------------------------------------------ helpers
    def _update_best(self, metrics: dict) -> bool:
        st = self.state
        value = metrics.get(st.monitor)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return st.best_value is None
        better = st.best_value is None or (
            value < st.best_value if minimise(st.monitor) else value > st.best_value
        )
        if better:
            st.best_value, st.best_epoch, st.bad_epochs = float(value), st.epoch, 0
        else:
            st.bad_epochs += 1
        return better

    def _should_stop(self) -> bool:
        st = self.state
        if st.patience is not None and st.bad_epochs >= st.patience:
            self.console.print(
                f"early stopping: {st.monitor} did not improve for {st.patience} epochs "
                f"(best {st.best_value:.4f} at epoch {st.best_epoch})"
            )
            return True
        # Stop when another epoch like the last one would overrun the wall-clock budget.
        budget = self.time_budget_s
        if budget is not None and st.epoch < st.total_epochs and st.wall_seconds + self._epoch_wall > budget:
            spent = f"{st.wall_seconds:.0f}s of {budget:.0f}s"
            self.console.print(f"time budget reached after epoch {st.epoch} ({spent})")
            return True
        return False

    def _write_outputs(self, improved: bool) -> None:
        st = self.state
        write_history(self.run.history, st.history)
        write_segments(self.run.segments, [s.to_dict() for s in st.segments])
        plot_curves(st.history, [s.to_dict() for s in st.segments], self.run.curves_plot)
        self._save("last")
        if improved:
            self._save("best")

    def _save(self, which: str) -> Path:
        meta = CheckpointMeta.from_checkpoint({"meta": self.task.meta(), **self.extra_checkpoint})
        state = {
            **meta.to_checkpoint(),
            "state_dict": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "train_state": self.state.to_dict(),
        }
        return save_checkpoint(self.run.checkpoint(which), state)

    def _maybe_fit_time_budget(self, epoch_start: float, steps_done: int) -> None:
        """With --time, size the run from the first steps' speed and lay the schedule over it."""
        st = self.state
        if (
            self.time_budget_s is None
            or st.epoch > 0
            or len(st.segments) > 1
            or st.segments[0].reason == "timed"
        ):
            return
        probe = min(max(3, self.steps_per_epoch // 5), self.steps_per_epoch)
        if steps_done < probe:
            return
        per_step = (time.perf_counter() - epoch_start) / steps_done
        # Validation costs roughly a third of a training pass over the same number of images.
        per_epoch = per_step * self.steps_per_epoch * 1.15
        epochs = max(1, int(self.time_budget_s // per_epoch))
        st.total_epochs = epochs
        seg = st.segments[0]
        seg.end_step = epochs * self.steps_per_epoch
        seg.reason = "timed"
        self.console.print(
            f"time budget {self.time_budget_s:.0f}s: about {per_epoch:.1f}s per epoch -> {epochs} epochs; "
            f"LR schedule laid out over {seg.end_step} steps"
        )

    def _refit_time_budget(self) -> None:
        """After the first whole epoch (validation included) its wall time sizes the run for good."""
        st = self.state
        if self.time_budget_s is None or st.epoch != 1 or len(st.segments) > 1:
            return
        epochs = max(1, int(self.time_budget_s // max(self._epoch_wall, 1e-6)))
        if epochs != st.total_epochs:
            st.total_epochs = epochs
            st.segments[0].end_step = epochs * self.steps_per_epoch
            self.console.print(
                f"first epoch took {self._epoch_wall:.1f}s with validation: {epochs} epochs fit the budget; "
                f"LR schedule laid out over {st.segments[0].end_step} steps"
            )

    def _set_freeze(self, epoch: int) -> None:
        plan = self.freeze
        if plan is None:
            return
        count = apply_freeze(self.raw_model, plan, frozen=plan.active(epoch))
        if epoch == plan.epochs:
            self.console.print(f"epoch {epoch + 1}: backbone unfrozen, training all layers")
        elif not self._freeze_told:
            self.console.print(f"{plan.describe()} ({count} tensors)")
        self._freeze_told = True

    def _autocast(self):
        return autocast_for(self.device, self.precision)

    @contextlib.contextmanager
    def _progress(self, epoch: int):
        progress = Progress(
            TextColumn(f"epoch {epoch}/{self.state.total_epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        with progress:
            bar = progress.add_task("train", total=self.steps_per_epoch, loss=float("nan"))
            yield progress, bar

    def _print_epoch(self, row: dict, improved: bool) -> None:
        shown = ", ".join(
            f"{k} {v:.4f}"
            for k, v in row.items()
            if k.startswith(("train_", "val_")) and isinstance(v, float)
        )
        star = " *best*" if improved else ""
        self.console.print(
            f"epoch {row['epoch']}/{self.state.total_epochs}: {shown}, lr {row['lr']:.3g}, "
            f"{row['images_per_s']:.1f} img/s, {row['epoch_time_s']:.1f}s{star}"
        )
