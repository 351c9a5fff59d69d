"""The one training loop every task goes through.

A task (classification, detection) supplies batches, a loss and a validation pass; the trainer
owns everything else: LR from the run's schedule segments, mixed precision, history.csv and curves
written every epoch, last/best checkpoints, early stopping, a wall-clock budget, and a resumable
checkpoint on Ctrl-C or SIGTERM. An epoch is one full pass over the training set; only the last
epoch of a ``--time`` run may be cut short, so that the budget is used whole (see engine/budget.py).
"""

from __future__ import annotations

import contextlib
import gc
import math
import signal
import time
from collections.abc import Sequence
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
from timm.utils import ModelEmaV3

from lanner.engine import distributed
from lanner.engine.budget import (
    FEW_STEPS,
    FIXED_EPOCH_OVERHEAD_S,
    PROBE_SHARE,
    VALIDATION_SHARE,
    BudgetPlan,
    describe,
    estimated_overhead,
    fits_another_epoch,
    plan_costed_steps,
    ready_to_plan,
    schedule_unfinished,
    too_few_steps,
    validation_interval,
)
from lanner.engine.callbacks import Callback
from lanner.engine.checkpoint import save_checkpoint
from lanner.engine.history import overfitting_start, write_history, write_segments
from lanner.engine.plots import plot_curves
from lanner.engine.schedules import Segment, lr_at, next_segment
from lanner.engine.setup import now
from lanner.errors import Interrupted
from lanner.models.devices import autocast_for
from lanner.models.weights import FreezePlan, apply_freeze, keep_frozen_norms
from lanner.rundir import CheckpointMeta, RunDir


class TrainTask(Protocol):
    """What a task gives the trainer. Batches of one epoch come in a seeded order (resumable mid-epoch).

    A task class subclasses it to take the defaults below (a structural match alone would not)."""

    monitor: str  # default metric for best checkpoint / early stopping, e.g. "val_acc"
    num_train_images: int
    num_val_images: int
    batch_size: int
    # With several processes, validate(model, part) takes a distributed.Part: each process scores its
    # part and process 0 gathers; without, process 0 validates alone while the others wait.
    validates_in_parts: bool = False
    train_eval_idx: Sequence[int] = ()  # the training images scored beside val every epoch (--eval-train)
    unit: str = "images"  # what an epoch is counted in, as the start-up line says it
    sync_batchnorm_by_default: bool = False  # --sync-bn's default on several GPUs

    def steps_per_epoch(self) -> int: ...
    def train_batches(self, epoch: int, skip: int = 0): ...
    def training_step(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, int]: ...
    def validate(self, model: torch.nn.Module) -> dict[str, float]: ...
    def meta(self) -> dict: ...

    def plan_epochs(self, epochs: int) -> str | None:
        """Told the run's planned epochs (at each epoch's start, and when a --time plan sets them): a
        task may adapt what depends on the run's length, and return a line saying so (None: nothing)."""
        return None

    def step_cost(self, epoch: int, epochs: int) -> float:
        """A training step's time in ``epoch`` of a run of ``epochs``, as a fraction of a step at full
        size (a task whose inputs grow during the run says less than 1 for its early epochs)."""
        return 1.0

    def sample_validation(self, keep: float) -> str | None:
        """Validate on about ``keep`` (0..1) of the validation images from now on, a seeded sample,
        because one validation would eat too much of a --time budget; return a line saying so (None:
        this task always validates on all of them)."""
        return None


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
    # everything: training, validation, checkpoints, plots and --lr auto's range test (the --time budget)
    wall_seconds: float = 0.0

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "segments"}
        d["segments"] = [s.to_dict() for s in self.segments]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        d = dict(d)
        d["segments"] = [Segment.from_dict(s) for s in d["segments"]]
        return cls(**d)


def optimizer_step(
    task, model, optimizer, scaler, autocast, batch, lr: float, clip_grad: float | None = None
) -> tuple[float, int]:
    """One training step at ``lr`` (scaled per parameter group by its ``lr_scale``): the loss and the
    batch's image count. A non-finite loss is returned without a backward pass or an update.
    ``clip_grad``: the gradients' total norm is clipped to it (after unscaling) before the update."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer.zero_grad(set_to_none=True)
    with autocast():
        loss, n = task.training_step(model, batch)
    if torch.isfinite(loss):
        scaler.scale(loss).backward()
        if clip_grad is not None:
            scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip_grad)
        scaler.step(optimizer)
        scaler.update()
    return loss.item(), n


def weight_average(model: torch.nn.Module, decay: float, weights: dict | None) -> ModelEmaV3 | None:
    """An exponential moving average of ``model``'s weights and buffers (timm's), or None when
    ``decay`` is 0. Its decay warms up (1 - (1 + step)^-3/4, capped at ``decay``) so that the average
    of a short run is not dominated by its random start; ``weights``: a resumed run's average."""
    if not decay:
        return None
    ema = ModelEmaV3(model, decay=decay, use_warmup=True, warmup_power=3 / 4)
    if weights is not None:
        ema.module.load_state_dict(weights)
    return ema


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
    clip_grad: float | None = None
    ema_decay: float = 0.0  # 0: no moving average of the weights
    ema_weights: dict | None = None  # a resumed run's averaged weights


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
        """``model`` is the bare model; with several processes (``context.dist``) the trainer wraps it
        in DDP itself, after freezing, and ``task`` hands out this process's share."""
        self.task, self.optimizer, self.state = task, optimizer, state
        self.raw_model = distributed.unwrap(model)  # what is validated and saved
        self.model: torch.nn.Module | None = None  # what trains: raw_model, or its DDP wrapper
        self.dist, self.console = context.dist, context.console
        self.callbacks = callbacks or Callback()  # told of every epoch on process 0
        self.run, self.device, self.precision = RunDir(context.run_dir), context.device, context.precision
        self.extra_checkpoint = settings.identity
        self.time_budget_s = settings.time_budget_s
        # --time counts validation too. The first segment's budget is the whole run's (a resumed
        # Ctrl-C finishes the plan it had); a resume that gave a new --time starts its own.
        self._wall_at_start = state.wall_seconds if len(state.segments) > 1 else 0.0
        self._overhead_s = 0.0  # an epoch's validation (with --time: measured, else estimated)
        # What an epoch writes: its records (history, plots, callbacks), measured before the budget is
        # refitted, and its checkpoints, written after it (the checkpoint holds the new plan), so
        # estimated by the previous epoch's.
        self._records_s = self._checkpoints_s = FIXED_EPOCH_OVERHEAD_S / 2
        self._validate_every = 1
        self._replan_at: int | None = None  # steps done at which a first-epoch plan is re-made
        self.freeze, self._freeze_told = settings.freeze, False
        self._overfitting_told = False
        device, precision = self.device, self.precision
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
        self.steps_per_epoch = task.steps_per_epoch()
        self.clip_grad = settings.clip_grad
        self.ema = weight_average(self.raw_model, settings.ema_decay, settings.ema_weights)
        # What is validated, kept as best/last and used by eval/predict: the average when there is one.
        self.kept_model = self.ema.module if self.ema is not None else self.raw_model

    # ----------------------------------------------------------------------------------------- loop
    def fit(self) -> TrainState:
        st = self.state
        with _StopFlag() as stop:
            while st.epoch < st.total_epochs:
                epoch_start = time.perf_counter()
                self._start_epoch(st.epoch)
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
                if self._stop_agreed(stop, self._budget_spent(start)):
                    break
        elapsed = time.perf_counter() - start
        st.train_seconds += elapsed
        # Every process's losses and images count (sums over the group; unchanged for one process).
        loss_sum, loss_n, seen = distributed.sum_on_device([loss_sum, loss_n, seen], self.dist, self.device)
        self._epoch_speed = (seen / elapsed if elapsed > 0 else 0.0, elapsed)
        self._epoch_steps = st.step_in_epoch
        # Added to what the epoch saw before an interruption: kept if this one is interrupted too.
        st.partial_loss_sum += float(loss_sum)
        st.partial_images += int(loss_n)
        return st.partial_loss_sum / max(st.partial_images, 1)

    def _stop_agreed(self, stop: _StopFlag, budget_spent: bool = False) -> bool:
        """Whether to stop now (a signal, or the --time budget spent on this process's clock); with
        several processes, all stop after the same step (or none)."""
        return distributed.any_process(stop.requested or budget_spent, self.dist, self.device)

    def _step(self, batch) -> tuple[float, int]:
        lr = lr_at(self.state.segments, self.state.step)
        loss, n = optimizer_step(
            self.task, self.model, self.optimizer, self.scaler, self._autocast, batch, lr, self.clip_grad
        )
        if self.ema is not None and math.isfinite(loss):
            self.ema.update(self.raw_model, step=self.state.step + 1)
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
        fraction = self._epoch_steps / self.steps_per_epoch
        st.step_in_epoch, st.partial_loss_sum, st.partial_images = 0, 0.0, 0
        images_per_s, epoch_time = self._epoch_speed
        metrics = self._validate() if self._validates(st.epoch) else {}
        row = {
            "epoch": st.epoch,
            "segment": st.segments[-1].index,
            "lr": lr_at(st.segments, max(st.step - 1, 0)),
            "train_loss": train_loss,
            **metrics,
            "epoch_time_s": round(epoch_time, 3),
            "images_per_s": round(images_per_s, 2),
        }
        if fraction < 1:  # the budget's end cut the last epoch short: say how much of it ran
            row["epoch_fraction"] = round(fraction, 4)
        st.history.append(row)
        improved = self._update_best(metrics)
        # The wall time of this epoch so far (what it writes next is counted right after).
        self._epoch_wall = time.perf_counter() - epoch_start
        # Process 0's clock is the run's: every process then decides the same about the budget.
        st.wall_seconds = self._agreed(st.wall_seconds + self._epoch_wall)
        # What an epoch writes is part of --time too (~0.6 s an epoch of plots and checkpoints: in a
        # run of 90 tiny epochs, leaving it out overran an 8 s budget sevenfold).
        self._records_s = self._timed_on_main(lambda: self._write_records(row))
        self._refit_time_budget(epoch_time)
        self._checkpoints_s = self._timed_on_main(lambda: self._write_checkpoints(improved))
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
    def _validate(self) -> dict[str, float]:
        self.model.eval()
        metrics = {}
        # Each process validates its part when the task can; else process 0 alone while the others
        # wait. Process 0's metrics are broadcast, so every process decides alike.
        if self.dist.is_main or self.task.validates_in_parts:
            with torch.no_grad(), self._autocast():
                metrics = self.task.validate(self.kept_model)
        return distributed.broadcast(metrics, self.dist)

    def _validates(self, epoch: int) -> bool:
        """Every epoch, except in a --time run whose validation would eat too much of the budget:
        then every k-th epoch and the last (see budget.validation_interval)."""
        return epoch % self._validate_every == 0 or epoch >= self.state.total_epochs

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
        budget = self.time_budget_s
        # An epoch the clock cut short ends a plan that is no longer re-fitted (after an unfreeze
        # or a resume: a later segment), rather than starting epochs the clock cuts at once.
        cut = self._epoch_steps < self.steps_per_epoch and len(st.segments) > 1
        if budget is not None and st.epoch < st.total_epochs and (self._budget_left() <= 0 or cut):
            spent = f"{st.wall_seconds:.0f}s of {budget:.0f}s"
            self.console.print(f"time budget reached after epoch {st.epoch} ({spent})")
            return True
        return False

    @property
    def _outputs_s(self) -> float:
        return self._records_s + self._checkpoints_s

    def _timed_on_main(self, write) -> float:
        """Run ``write`` on process 0; its seconds (process 0's, for all) are added to the run's wall time."""
        start = time.perf_counter()
        if self.dist.is_main:
            write()
        seconds = self._agreed(time.perf_counter() - start)
        self.state.wall_seconds += seconds
        return seconds

    def _write_records(self, row: dict) -> None:
        st = self.state
        write_history(self.run.history, st.history)
        plot_curves(st.history, [s.to_dict() for s in st.segments], self.run.curves_plot)
        self.callbacks.on_epoch_end(row)

    def _write_checkpoints(self, improved: bool) -> None:
        write_segments(self.run.segments, [s.to_dict() for s in self.state.segments])
        self._save("last")
        if improved:
            self._save("best")

    def _save(self, which: str) -> Path:
        meta = CheckpointMeta.from_checkpoint({"meta": self.task.meta(), **self.extra_checkpoint})
        state = {
            **meta.to_checkpoint(),
            "state_dict": self.kept_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "train_state": self.state.to_dict(),
        }
        if self.ema is not None:  # the weights that train on, for a resume
            state["train_weights"] = self.raw_model.state_dict()
        return save_checkpoint(self.run.checkpoint(which), state)

    def _maybe_fit_time_budget(self, epoch_start: float, steps_done: int) -> None:
        """With --time, size the run from the first steps' speed and lay the schedule over it."""
        st = self.state
        if self.time_budget_s is None or st.epoch > 0 or len(st.segments) > 1:
            return
        if st.segments[0].reason == "timed":
            self._maybe_replan_within_epoch(epoch_start, steps_done)
            return
        if steps_done < min(3, self.steps_per_epoch):
            return
        elapsed = time.perf_counter() - epoch_start
        # Every process decides alike at the same step (the plan below is agreed collectively).
        spent = distributed.any_process(elapsed >= PROBE_SHARE * self.time_budget_s, self.dist, self.device)
        if not ready_to_plan(steps_done, self.steps_per_epoch, spent):
            return
        # One step time for all: the validation sample and the plan must not differ between processes.
        full_step_s = self._agreed(elapsed / steps_done / self.task.step_cost(0, st.total_epochs))
        self._overhead_s = self._estimated_overhead(full_step_s)
        if self._overhead_s > VALIDATION_SHARE * self.time_budget_s:
            self._sample_validation(full_step_s)
        plan, step_s = self._plan_rest(self._budget_left() - elapsed, full_step_s, self._overhead_s)
        plan, self._overhead_s, step_s = self._agreed((plan, self._overhead_s, step_s))
        self._lay_out(BudgetPlan(plan.steps + st.step, plan.epochs), step_s, "first steps")
        st.segments[0].reason = "timed"
        self._replan_at = 2 * steps_done

    def _maybe_replan_within_epoch(self, epoch_start: float, steps_done: int) -> None:
        """A plan that ends inside the first epoch (an epoch of tiles longer than the budget) gets no
        epoch's end to be re-made at: re-make it from the measured speed each time the steps done
        double. The first steps run slower than the rest: a 15-minute tiled run planned at 8.40 s per
        step from its first 5 steps, then ran at 8.02: ~30 s of its 900 went unused for that alone."""
        st = self.state
        if self._replan_at is None or steps_done < self._replan_at or st.total_epochs > 1:
            return
        self._replan_at = 2 * steps_done
        elapsed = time.perf_counter() - epoch_start
        full_step_s = self._agreed(elapsed / steps_done / self.task.step_cost(0, st.total_epochs))
        self._overhead_s = self._estimated_overhead(full_step_s)  # still unmeasured: from the new speed
        plan, step_s = self._plan_rest(self._budget_left() - elapsed, full_step_s, self._overhead_s)
        plan, step_s = self._agreed((plan, step_s))
        steps = plan.steps + st.step
        if plan.epochs == 1:  # the plan counts a whole epoch from here; this one has steps_done fewer left
            steps = min(steps, self.steps_per_epoch)
        self._lay_out(BudgetPlan(steps, plan.epochs), step_s, f"{steps_done} steps")

    def _estimated_overhead(self, full_step_s: float) -> float:
        task = self.task
        # Validation scores the val images and the training sample of --eval-train (tasks that have one).
        scored = task.num_val_images + len(task.train_eval_idx)
        return estimated_overhead(full_step_s, task.batch_size, scored)

    def _sample_validation(self, full_step_s: float) -> None:
        """One validation would cost more than VALIDATION_SHARE of the whole budget (tiled validation
        on whole aerial images): validate on a sample sized to fit, when the task can."""
        note = self.task.sample_validation(VALIDATION_SHARE * self.time_budget_s / self._overhead_s)
        if note:
            self._overhead_s = self._estimated_overhead(full_step_s)
            if self.dist.is_main:
                self.console.print(note)

    def _refit_time_budget(self, train_s: float) -> None:
        """After every epoch, its measured step time and validation cost size the rest, so that the
        schedule still ends where the budget does when epochs slow down (longer curves, a busy CPU)."""
        st = self.state
        if self.time_budget_s is None or len(st.segments) > 1 or st.segments[0].reason != "timed":
            return
        if st.epoch >= st.total_epochs:  # the planned steps are done, or the clock cut the last epoch
            if st.step < st.segments[0].end_step:
                self._tell_cut_short()
            return
        full_step_s = train_s / max(self._epoch_steps, 1) / self.task.step_cost(st.epoch - 1, st.total_epochs)
        if st.history[-1].keys() & {st.monitor, "val_loss"}:  # validated: its cost measured
            self._overhead_s = max(self._epoch_wall - train_s, 0.0)
        if st.epoch == 1:
            self._space_validation(self._overhead_s, train_s)
        # What an epoch costs beyond its steps, on average: validation, and what it writes.
        overhead = self._overhead_s / self._validate_every + self._outputs_s
        left = self._budget_left() - self._checkpoints_s  # this epoch's checkpoints are written next
        plan, step_s = self._plan_rest(left, full_step_s, overhead)
        if not fits_another_epoch(left, step_s, overhead):
            plan = BudgetPlan(0, 0)  # the run ends with this epoch, not with a step the clock cuts
            self._tell_cut_short()
        plan, self._overhead_s, self._validate_every = self._agreed(
            (plan, self._overhead_s, self._validate_every)
        )
        self._lay_out(BudgetPlan(st.step + plan.steps, st.epoch + plan.epochs), step_s, f"epoch {st.epoch}")

    def _tell_cut_short(self) -> None:
        """The plan's steps no longer fit (a load spike, an epoch slower than measured): the run ends
        at this epoch without overrunning --time. The user is told what it cost when the LR stopped
        materially short of its schedule's end (not when the clock took the last steps of a decayed
        cosine: a 2-minute run on an idle machine ended 4 of 380 steps short, at LR 4e-7)."""
        st, seg = self.state, self.state.segments[0]
        reached, planned_end = st.history[-1]["lr"], lr_at(st.segments, max(seg.end_step - 1, 0))
        if self.dist.is_main and schedule_unfinished(reached, planned_end, seg.base_lr):
            self.console.print(
                f"[yellow]training ran slower than planned (a busy machine?): the run ends at epoch "
                f"{st.epoch}, step {st.step} of the {seg.end_step} planned, with the LR at "
                f"{reached:.3g}, not decayed to its schedule's end[/]"
            )

    def _plan_rest(self, budget_s: float, full_step_s: float, overhead_s: float) -> tuple[BudgetPlan, float]:
        """The plan from the current epoch on, and its mean step time (see plan_costed_steps)."""
        st = self.state
        return plan_costed_steps(
            budget_s, self.steps_per_epoch, full_step_s, overhead_s, st.epoch,
            max(st.total_epochs, st.epoch + 1), self.task.step_cost,
        )  # fmt: skip

    def _space_validation(self, validation_s: float, train_s: float) -> None:
        self._validate_every = validation_interval(validation_s, train_s)
        if self._validate_every > 1:
            self.console.print(
                f"validation took {validation_s:.0f}s against {train_s:.0f}s of training: within "
                f"--time it runs every {self._validate_every} epochs (and after the last)"
            )

    def _lay_out(self, plan: BudgetPlan, step_s: float, measured_on: str) -> None:
        st, seg = self.state, self.state.segments[0]
        # A plan inside one epoch is told when its steps change: they are the whole run.
        told = (
            plan.epochs == st.total_epochs
            and seg.reason == "timed"
            and (plan.epochs > 1 or plan.steps == seg.end_step)
        )
        st.total_epochs, seg.end_step = plan.epochs, plan.steps
        if not told:  # else a small correction: the same number of epochs, not worth a line
            self.console.print(
                f"time budget {self.time_budget_s:.0f}s at {step_s:.2f}s per step ({measured_on}): "
                f"{describe(plan, self.steps_per_epoch)}; LR schedule laid out over {plan.steps} steps"
            )
        if plan.steps < FEW_STEPS and seg.reason != "timed":
            self.console.print(f"[yellow]{too_few_steps(plan.steps)}[/]")
        self._tell_planned_epochs()

    def _tell_planned_epochs(self) -> None:
        said = self.task.plan_epochs(self.state.total_epochs)
        if said and self.dist.is_main:
            self.console.print(said)

    def _agreed(self, value):
        """Process 0's ``value`` on every process (what several processes must decide alike)."""
        return distributed.broadcast(value, self.dist)

    def _budget_left(self) -> float:
        return (self.time_budget_s or 0.0) - (self.state.wall_seconds - self._wall_at_start)

    def _budget_spent(self, epoch_start: float) -> bool:
        """With --time: the planned steps are done, or the clock says so (a plan made on a
        too-hopeful estimate must not overrun); the epoch ends here and is validated."""
        if self.time_budget_s is None:
            return False
        if self.state.step >= self.state.segments[-1].end_step:
            return True
        return time.perf_counter() - epoch_start + self._overhead_s + self._outputs_s >= self._budget_left()

    def _start_epoch(self, epoch: int) -> None:
        """Freeze what ``--freeze`` says for this epoch; (re-)wrap for DDP when what trains changed."""
        if self.time_budget_s is None or self.state.segments[0].reason == "timed":  # else: told once planned
            self._tell_planned_epochs()
        changed = self._set_freeze(epoch)
        if self.model is not None and not (changed and self.dist.enabled):
            return
        if self.model is not None:
            # DDP averages the gradients of the parameters that required them when it wrapped the
            # model: frozen ones are left out, and unfrozen ones need a new wrapper (torch's advice).
            self.model = None
            gc.collect()  # the old wrapper's gradient hooks go with it
        self.model = distributed.wrap(self.raw_model, self.dist, self.device)

    def _set_freeze(self, epoch: int) -> bool:
        """Apply the freeze plan for ``epoch``; whether that changed which parameters train."""
        plan = self.freeze
        if plan is None:
            return False
        before = [p.requires_grad for p in self.raw_model.parameters()]
        frozen = plan.active(epoch)
        count = apply_freeze(self.raw_model, plan, frozen=frozen)
        if not frozen:
            self._record_unfreeze(plan)
        if not self._freeze_told or epoch == plan.epochs:
            self._tell_freeze(plan, epoch, count)
        self._freeze_told = True
        return before != [p.requires_grad for p in self.raw_model.parameters()]

    def _record_unfreeze(self, plan: FreezePlan) -> None:
        """``--freeze backbone:N`` ends: a new segment of the run (once; a resume finds it recorded)."""
        st = self.state
        if any(s.reason == "unfreeze" for s in st.segments):
            return
        change = {"freeze": [plan.text, None]}
        st.segments.append(next_segment(st.segments[-1], st.epoch, st.step, "unfreeze", change, now()))

    def _tell_freeze(self, plan: FreezePlan, epoch: int, count: int) -> None:
        if plan.active(epoch):
            self.console.print(f"{plan.describe()} ({count} tensors)")
            return
        segment = next(s.index for s in self.state.segments if s.reason == "unfreeze")
        when = f"epoch {epoch + 1}:" if epoch == plan.epochs else f"since epoch {plan.epochs + 1}:"
        parts = ", ".join(plan.parts)
        self.console.print(f"{when} {parts} unfrozen, training all layers (segment {segment})")

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
