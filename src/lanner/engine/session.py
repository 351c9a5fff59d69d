"""A training session from start to end: process group, device, run directory, data and model, the
trainer, and what happens when it stops. ``lanner train``, ``resume`` and ``lr-find`` all start here.

The task's side (reading data, building the model) comes in as a ``prepare`` function, so the
engine knows nothing of any task; the caller (``lanner.api``) hands over the task plug-in's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

import lanner
from lanner._io import sweep_temp_files, write_json, write_text
from lanner.config import TrainConfig, parse_duration
from lanner.data.formats import read_dataset
from lanner.data.images import set_max_image_pixels
from lanner.engine import distributed
from lanner.engine.callbacks import Callback, Callbacks, RunStart
from lanner.engine.schedules import plot_schedule
from lanner.engine.setup import hardware_info, new_run_dir
from lanner.engine.tracking import make_tracker
from lanner.engine.trainer import Trainer, TrainState
from lanner.errors import Interrupted
from lanner.models.devices import choose_device, choose_precision
from lanner.rundir import RunDir

current_run_dir: Path | None = None  # the run this process is making, once made (for the crash log)

# prepare(config, run, device, console, fresh) -> the task's Prepared (task, model, model_name, ...)
Prepare = Callable[[TrainConfig, RunDir, torch.device, Console, bool], Any]


@dataclass
class Session:
    """What train, resume and lr-find share: the run's settings, where it runs, its data and model."""

    config: TrainConfig
    run: RunDir
    device: torch.device
    precision: str
    console: Console
    dist: distributed.Distributed
    prepared: Any = None  # lanner.tasks.Prepared; its task sharded when several processes

    @property
    def run_dir(self) -> Path:
        return self.run.path


def infer_task(config: TrainConfig) -> str:
    if config.task:
        return config.task
    return read_dataset(config.data, config.format, allow_outside_root=config.allow_outside_root).task


def start(
    config: TrainConfig, console: Console, run_dir: Path | None, prepare: Prepare, kind: str = ""
) -> Session:
    """Join the process group (if any), pick device and precision, make (or reuse) the run directory,
    read the data and build the model."""
    if config.max_image_pixels is not None:
        set_max_image_pixels(config.max_image_pixels)
    dist = distributed.from_environment()
    distributed.check_supported(config, dist)
    device = distributed.start(dist, choose_device(config.device))
    console = console if dist.is_main else Console(quiet=True)  # one process speaks
    fresh = run_dir is None
    if fresh:
        config, run_dir = _new_run(config, console, dist, kind)
    torch.manual_seed(config.seed)
    if dist.is_main:  # what a killed run left half-written is of no use to anyone
        for folder in (run_dir, RunDir(run_dir).checkpoints):
            sweep_temp_files(folder)
    session = Session(
        config, RunDir(run_dir), device, choose_precision(config.precision, device), console, dist
    )
    # Process 0 reads the data and builds the cache; the others then find it built.
    if not dist.is_main:
        distributed.barrier(dist)
    session.prepared = prepare(config, session.run, device, console, fresh)
    if dist.is_main:
        distributed.barrier(dist)
    if dist.enabled:
        session.prepared.task = distributed.ShardedTask(session.prepared.task, dist)
    return session


def _new_run(config: TrainConfig, console: Console, dist, kind: str) -> tuple[TrainConfig, Path]:
    """A new run: process 0 names the directory, the others are told."""
    config = config.model_copy(update={"task": infer_task(config)})
    made = new_run_dir(config.run, kind + config.task) if dist.is_main else None
    run_dir = Path(distributed.broadcast(str(made), dist))
    global current_run_dir
    current_run_dir = run_dir
    console.print(f"run directory: [bold]{run_dir}[/]")
    return config.model_copy(update={"run": str(run_dir)}), run_dir


def set_up(config: TrainConfig, console: Console, prepare: Prepare, kind: str = "") -> Session:
    """A new run's session, with config.yaml and hardware.json written."""
    session = start(config, console, None, prepare, kind)
    prepared = session.prepared
    session.config = session.config.model_copy(
        update={"model": prepared.model_name, "batch_size": prepared.batch_size}
    )
    if session.dist.is_main:
        write_text(session.run.config, session.config.to_yaml())
        info = hardware_info(session.device, session.precision)
        write_json(session.run.hardware, {**info, "processes": session.dist.world})
    return session


def print_plan(s: Session, state: TrainState) -> None:
    task, batch = s.prepared.task, s.prepared.batch_size
    spe, n, unit = task.steps_per_epoch(), task.num_train_images, getattr(task, "unit", "images")
    if s.dist.enabled:
        shared = f"{spe} steps of batch {batch} on each of {s.dist.world} processes"
        s.console.print(f"epoch = {n} {unit} = {shared} (batch {batch * s.dist.world} in all)")
    else:
        s.console.print(f"epoch = {n} {unit} = {spe} steps of batch {batch}")
    sched = state.segments[-1].schedule
    warm = f", warmup {sched.warmup_epochs:g} epochs" if sched.warmup_epochs else ""
    config = s.config
    budget = f" (time budget {config.time}: epochs re-estimated after the first steps)" if config.time else ""
    s.console.print(
        f"device {s.device}, precision {s.precision}, optimizer {config.optimizer}, "
        f"lr {state.segments[-1].base_lr:g}, schedule {sched.name}{warm}, {state.total_epochs} epochs{budget}"
    )


def plot_plan(s: Session, state: TrainState) -> None:
    if s.dist.is_main:
        spe = s.prepared.task.steps_per_epoch()
        plot_schedule(state.segments, state.total_epochs * spe, spe, s.run.schedule_plot)


def callbacks_for(s: Session, segment: int = 0, changes: dict | None = None) -> Callback:
    """The run's callbacks (process 0 only; its tracker checks its server now, before training),
    told that the run starts."""
    if not s.dist.is_main:
        return Callback()
    tracker = make_tracker(s.config.track, s.run_dir, s.config.tracking_uri, s.config.experiment, s.console)
    callbacks = Callbacks([tracker] if tracker is not None else [])
    tags = {"lanner.version": lanner.__version__, "device": str(s.device), "precision": s.precision}
    tags["processes"] = str(s.dist.world)
    callbacks.on_start(RunStart(s.config.model_dump(mode="json"), tags, segment, changes or {}))
    return callbacks


def fit(s: Session, optimizer, state: TrainState, callbacks: Callback, after: Callable[[], None]) -> Path:
    """Train to the end of ``state``'s plan; then ``after()`` (the final evaluation) on process 0.
    Ctrl-C leaves a resumable checkpoint and re-raises :class:`Interrupted`."""
    trainer = _trainer(s, optimizer, state, callbacks)
    try:
        trainer.fit()
    except Interrupted:
        s.console.print(
            f"[yellow]stopped[/] at epoch {state.epoch + 1}, step {state.step_in_epoch} of "
            f"{trainer.steps_per_epoch}; checkpoint saved. Continue with: [bold]lanner resume {s.run_dir}[/]"
        )
        callbacks.on_stop("KILLED")
        raise
    except BaseException:
        callbacks.on_stop("FAILED")
        raise
    finally:
        distributed.stop(s.dist)
    if s.dist.is_main:
        _finish(s, state, callbacks, after)
    return s.run_dir


def _trainer(s: Session, optimizer, state: TrainState, callbacks: Callback) -> Trainer:
    config, prepared = s.config, s.prepared
    return Trainer(
        task=prepared.task,
        model=distributed.wrap(prepared.model, s.dist, s.device),
        optimizer=optimizer,
        state=state,
        run_dir=s.run_dir,
        device=s.device,
        precision=s.precision,
        console=s.console,
        extra_checkpoint={"config": config.model_dump(mode="json"), "model_name": prepared.model_name},
        time_budget_s=parse_duration(config.time) if config.time else None,
        freeze_epochs=config.freeze_epochs,
        dist=s.dist,
        callbacks=callbacks,
    )


def _finish(s: Session, state: TrainState, callbacks: Callback, after: Callable[[], None]) -> None:
    if state.best_epoch is not None:
        s.console.print(f"best {state.monitor} {state.best_value:.4f} at epoch {state.best_epoch}")
    after()
    callbacks.on_stop("FINISHED")
    s.console.print(f"run directory: [bold]{s.run_dir}[/]")
