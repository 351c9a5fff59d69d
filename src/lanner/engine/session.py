"""A training session from start to end: process group, device, run directory, data and model, the
trainer, and what happens when it stops. ``lanner train``, ``resume`` and ``lr-find`` all start here.

The task's side (reading data, building the model) comes in as a ``prepare`` function, so the
engine knows nothing of any task; the caller (``lanner.api``) hands over the task plug-in's.
"""

from __future__ import annotations

import shutil
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
from lanner.data.shard_index import is_shard_folder, read_index
from lanner.engine import distributed
from lanner.engine.callbacks import Callback, Callbacks, RunStart
from lanner.engine.runlock import RunLock, refuse_if_in_use
from lanner.engine.schedules import plot_schedule
from lanner.engine.setup import hardware_info, new_run_dir
from lanner.engine.tracking import TrackerSettings, make_trackers
from lanner.engine.trainer import RunContext, Trainer, TrainSettings, TrainState
from lanner.errors import Interrupted
from lanner.models.devices import choose_device, choose_precision
from lanner.models.weights import parse_freeze
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
    lock: RunLock | None = None  # process 0's hold on the run directory

    @property
    def run_dir(self) -> Path:
        return self.run.path


def infer_task(config: TrainConfig) -> str:
    if config.task:
        return config.task
    if is_shard_folder(config.data):  # a folder `lanner shard` wrote: its index says the task
        return read_index(config.data).task
    return read_dataset(config.data, config.format, allow_outside_root=config.allow_outside_root).task


def start(
    config: TrainConfig, console: Console, run_dir: Path | None, prepare: Prepare, kind: str = "",
    alone: bool = False,
) -> Session:  # fmt: skip
    """Join the process group (if any), pick device and precision, make (or reuse) the run directory,
    read the data and build the model. ``alone``: this process works by itself, as if no group were
    named in its environment (``lr-find`` in process 0 of a group whose others have stopped)."""
    if config.max_image_pixels is not None:
        set_max_image_pixels(config.max_image_pixels)
    dist = distributed.SINGLE if alone else distributed.from_environment()
    distributed.check_sync_batchnorm(config.sync_bn, choose_device(config.device))
    device = distributed.start(dist, choose_device(config.device))
    console = console if dist.is_main else Console(quiet=True)  # one process speaks
    fresh, created = run_dir is None, False
    if fresh:
        config, run_dir, created = _new_run(config, console, dist, kind)
    session = Session(
        config, RunDir(run_dir), device, choose_precision(config.precision, device), console, dist
    )
    session.lock = RunLock(session.run).acquire(console) if dist.is_main else None
    try:
        _prepare_session(session, prepare, fresh)
    except BaseException:
        _abandon(session, created)
        raise
    return session


def _prepare_session(session: Session, prepare: Prepare, fresh: bool) -> None:
    config, run_dir, dist = session.config, session.run_dir, session.dist
    torch.manual_seed(config.seed)
    if dist.is_main:  # what a killed run left half-written is of no use to anyone
        for folder in (run_dir, RunDir(run_dir).checkpoints):
            sweep_temp_files(folder)
    # Process 0 reads the data and builds the cache; the others then find it built.
    if not dist.is_main:
        distributed.barrier(dist)
    session.prepared = prepare(config, session.run, session.device, session.console, fresh)
    if dist.is_main:
        distributed.barrier(dist)
    if dist.enabled:
        session.prepared.task = distributed.ShardedTask(session.prepared.task, dist)


def release(s: Session) -> None:
    """The session is over (finished, stopped or failed): another process may take the run."""
    if s.lock is not None:
        s.lock.release()


def _abandon(s: Session, created: bool) -> None:
    """A start that failed before training: release the run; a directory this start made holds
    nothing of a run yet (no checkpoint), so it goes rather than litter runs/ with half-made runs."""
    release(s)
    if created and s.dist.is_main and not s.run.holds_run():
        shutil.rmtree(s.run_dir, ignore_errors=True)
        global current_run_dir
        current_run_dir = None


def _new_run(config: TrainConfig, console: Console, dist, kind: str) -> tuple[TrainConfig, Path, bool]:
    """A new run: process 0 names the directory, the others are told. Also: whether this start made it."""
    config = config.model_copy(update={"task": infer_task(config)})
    made, created = _make_run_dir(config, kind) if dist.is_main else (None, False)
    run_dir = Path(distributed.broadcast(str(made), dist))
    global current_run_dir
    current_run_dir = run_dir
    console.print(f"run directory: [bold]{run_dir}[/]")
    return config.model_copy(update={"run": str(run_dir)}), run_dir, created


def _make_run_dir(config: TrainConfig, kind: str) -> tuple[Path, bool]:
    named = Path(config.run) if config.run else None
    if named is not None:  # a run another process is making: name it, not just "already holds a run"
        refuse_if_in_use(RunDir(named))
    existed = named is not None and named.exists()
    return new_run_dir(config.run, kind + config.task), not existed


def set_up(
    config: TrainConfig, console: Console, prepare: Prepare, kind: str = "", alone: bool = False
) -> Session:
    """A new run's session, with config.yaml and hardware.json written (``alone``: see :func:`start`)."""
    session = start(config, console, None, prepare, kind, alone)
    prepared = session.prepared
    session.config = session.config.model_copy(
        update={
            "model": prepared.model_name,
            "batch_size": prepared.batch_size,
            "data": _kept_data_path(config.data),
            **({"image_size": prepared.image_size} if prepared.image_size else {}),
        }
    )
    if session.dist.is_main:
        write_text(session.run.config, session.config.to_yaml())
        info = hardware_info(session.device, session.precision)
        write_json(session.run.hardware, {**info, "processes": session.dist.world})
    return session


def _kept_data_path(data: str) -> str:
    """DATA as config.yaml keeps it: a local path made absolute, so that eval, predict and resume find
    the run's data from any working directory (a URL stays as given)."""
    return str(Path(data).resolve()) if data and "://" not in data and Path(data).exists() else data


def print_plan(s: Session, state: TrainState) -> None:
    task, batch = s.prepared.task, s.prepared.batch_size
    spe, n, unit = task.steps_per_epoch(), task.num_train_images, task.unit
    if s.dist.enabled:
        shared = f"{spe} steps of batch {batch} on each of {s.dist.world} processes"
        s.console.print(f"epoch = {n} {unit} = {shared} (batch {batch * s.dist.world} in all)")
    else:
        s.console.print(f"epoch = {n} {unit} = {spe} steps of batch {batch}")
    sched = state.segments[-1].schedule
    warm = f", warmup {sched.warmup_epochs:g} epochs" if sched.warmup_epochs else ""
    config = s.config
    budget = f" (time budget {config.time}: epochs re-estimated after the first steps)" if config.time else ""
    if config.ema:
        budget += f"; weights averaged (EMA, decay {config.ema:g}): the average is validated and kept"
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
    config = s.config
    settings = TrackerSettings(
        s.run_dir, config.tracking_uri, config.experiment, config.run_name, list(config.tags or [])
    )
    callbacks = Callbacks(make_trackers(config.track, settings, s.console))
    tags = {"lanner.version": lanner.__version__, "device": str(s.device), "precision": s.precision}
    tags["processes"] = str(s.dist.world)
    callbacks.on_start(RunStart(s.config.model_dump(mode="json"), tags, segment, changes or {}))
    return callbacks


def fit(
    s: Session, optimizer, state: TrainState, callbacks: Callback, after: Callable[[], None],
    ema_weights: dict | None = None,
) -> Path:  # fmt: skip
    """Train to the end of ``state``'s plan; then ``after()`` (the final evaluation) on process 0.
    Ctrl-C leaves a resumable checkpoint and re-raises :class:`Interrupted`. ``ema_weights``: a resumed
    run's moving average of the weights (``--ema``)."""
    trainer = _trainer(s, optimizer, state, callbacks, ema_weights)
    try:
        trainer.fit()
    except Interrupted as stop:
        s.console.print(
            f"[yellow]stopped[/] at epoch {state.epoch + 1}, step {state.step_in_epoch} of "
            f"{trainer.steps_per_epoch}; checkpoint saved."
        )
        stop.hint = f"lanner resume {s.run_dir}"  # a caller that trains for its own ends may say otherwise
        callbacks.on_stop("KILLED")
        raise
    except BaseException:
        callbacks.on_stop("FAILED")
        raise
    finally:
        distributed.stop(s.dist)
        release(s)
    if s.dist.is_main:
        _finish(s, state, callbacks, after)
    return s.run_dir


def _trainer(s: Session, optimizer, state: TrainState, callbacks: Callback, ema_weights) -> Trainer:
    config, prepared = s.config, s.prepared
    context = RunContext(s.run_dir, s.device, s.precision, s.console, s.dist)
    settings = TrainSettings(
        identity={"config": config.model_dump(mode="json"), "model_name": prepared.model_name},
        time_budget_s=parse_duration(config.time) if config.time else None,
        freeze=parse_freeze(config.freeze, config.freeze_epochs),
        clip_grad=config.clip_grad,
        ema_decay=config.ema,
        ema_weights=ema_weights,
    )
    model = prepared.model
    by_default = prepared.task.sync_batchnorm_by_default
    if distributed.use_sync_batchnorm(config.sync_bn, by_default, s.device, s.dist.world):
        model = distributed.sync_batchnorm(model)
    return Trainer(
        task=prepared.task, model=model, optimizer=optimizer, state=state, context=context,
        settings=settings, callbacks=callbacks,
    )  # fmt: skip


def _finish(s: Session, state: TrainState, callbacks: Callback, after: Callable[[], None]) -> None:
    if state.best_epoch is not None:
        s.console.print(f"best {state.monitor} {state.best_value:.4f} at epoch {state.best_epoch}")
    after()
    callbacks.on_stop("FINISHED")
    s.console.print(f"run directory: [bold]{s.run_dir}[/]")
