"""The Python face of lanner: every CLI verb is one of these functions."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

import lanner
from lanner._io import write_json, write_text
from lanner.config import TrainConfig, make_config, parse_duration
from lanner.engine import distributed
from lanner.engine.checkpoint import find_checkpoint, load_checkpoint
from lanner.engine.schedules import lr_at, plot_schedule, schedule_table
from lanner.engine.setup import (
    DEFAULT_LR,
    base_lr,
    build_optimizer,
    choose_device,
    choose_precision,
    first_segment,
    hardware_info,
    new_run_dir,
    now,
)
from lanner.engine.trainer import Interrupted, Trainer, TrainState
from lanner.errors import ConfigError

RESUMABLE = ("lr", "epochs", "schedule", "patience", "monitor", "time")


def _console(console: Console | None) -> Console:
    return console or Console()


def _infer_task(config: TrainConfig) -> str:
    if config.task:
        return config.task
    from lanner.data.formats import read_dataset

    return read_dataset(config.data, config.format).task


def _prepare(config: TrainConfig, run_dir: Path, device, console, fresh: bool):
    task = config.task
    if task == "detect":
        from lanner.tasks.detect_setup import prepare_detection

        return prepare_detection(config, run_dir, device, console, fresh)
    from lanner.tasks.classify_setup import prepare_classification

    return prepare_classification(config, run_dir, device, console, fresh)


# ------------------------------------------------------------------------------------------ train
@dataclass
class _Session:
    """What train, resume and lr-find share: the run's settings, where it runs, its data and model."""

    config: TrainConfig
    run_dir: Path
    device: torch.device
    precision: str
    console: Console
    dist: distributed.Distributed
    prepared: Any = None  # lanner.tasks.*_setup.Prepared; its task sharded when several processes


def _start(config: TrainConfig, console: Console, run_dir: Path | None, kind: str = "") -> _Session:
    """Join the process group (if any), pick device and precision, make (or reuse) the run directory,
    read the data and build the model."""
    if config.max_image_pixels is not None:
        from lanner.data.images import set_max_image_pixels

        set_max_image_pixels(config.max_image_pixels)
    dist = distributed.from_environment()
    distributed.check_supported(config, dist)
    device = distributed.start(dist, choose_device(config.device))
    console = console if dist.is_main else Console(quiet=True)  # one process speaks
    fresh = run_dir is None
    if fresh:  # a new run: process 0 names the directory, the others are told
        config = config.model_copy(update={"task": _infer_task(config)})
        made = new_run_dir(config.run, kind + config.task) if dist.is_main else None
        run_dir = Path(distributed.broadcast(str(made), dist))
        config = config.model_copy(update={"run": str(run_dir)})
        console.print(f"run directory: [bold]{run_dir}[/]")
    torch.manual_seed(config.seed)
    session = _Session(config, run_dir, device, choose_precision(config.precision, device), console, dist)
    # Process 0 reads the data and builds the cache; the others then find it built.
    if not dist.is_main:
        distributed.barrier(dist)
    session.prepared = _prepare(config, run_dir, device, console, fresh=fresh)
    if dist.is_main:
        distributed.barrier(dist)
    if dist.enabled:
        session.prepared.task = distributed.ShardedTask(session.prepared.task, dist)
    return session


def _set_up(config: TrainConfig, console: Console, kind: str = "") -> _Session:
    """A new run's session, with config.yaml and hardware.json written."""
    session = _start(config, console, None, kind)
    prepared = session.prepared
    session.config = session.config.model_copy(
        update={"model": prepared.model_name, "batch_size": prepared.batch_size}
    )
    if session.dist.is_main:
        write_text(session.run_dir / "config.yaml", session.config.to_yaml())
        info = hardware_info(session.device, session.precision)
        write_json(session.run_dir / "hardware.json", {**info, "processes": session.dist.world})
    return session


def train(config: TrainConfig, console: Console | None = None, *, evaluate_after: bool = True) -> Path:
    """Train a new run; returns its directory (printed at start and end)."""
    s = _set_up(config, _console(console))
    if s.config.lr == "auto":
        _auto_lr(s)
    config, prepared = s.config, s.prepared
    spe = prepared.task.steps_per_epoch()
    segments = [first_segment(config, spe)]
    state = TrainState(
        total_epochs=config.epochs,
        segments=segments,
        monitor=config.monitor or prepared.task.monitor,
        patience=config.patience,
    )
    optimizer = build_optimizer(prepared.model, config, base_lr(config))
    for note in prepared.notes:
        s.console.print(note)
    _print_plan(s, state)
    tracker = _tracker(s)
    if s.dist.is_main:
        plot_schedule(segments, config.epochs * spe, spe, s.run_dir / "schedule.png")
    if tracker is not None:
        tags = {"lanner.version": lanner.__version__, "device": str(s.device), "precision": s.precision}
        tracker.start(config.model_dump(mode="json"), {**tags, "processes": str(s.dist.world)})
    return _fit(s, optimizer, state, evaluate_after, tracker)


def _tracker(s: _Session):
    """The run's experiment tracker (process 0 only), checked to be reachable before training."""
    if s.config.track is None or not s.dist.is_main:
        return None
    from lanner.engine.tracking import make_tracker

    return make_tracker(s.config.track, s.run_dir, s.config.tracking_uri, s.config.experiment, s.console)


def lr_find(
    config: TrainConfig,
    console: Console | None = None,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
) -> dict:
    """LR range test on the run's data and model (:mod:`lanner.engine.lr_find`); nothing is kept
    but ``lr_find.csv``, ``lr_find.json`` and ``lr_find.png`` in the (new) run directory."""
    from lanner.engine.lr_find import exponential_lrs

    exponential_lrs(start_lr, end_lr, steps)  # bad bounds fail before any data is read
    session = _set_up(config, _console(console), kind="lr-find-")
    for note in session.prepared.notes:
        session.console.print(note)
    result, summary = _range_test(session, session.prepared.model, start_lr, end_lr, steps)
    _print_lr_find(session.console, session.config, result, session.run_dir)
    return summary


def _range_test(s: _Session, model, start_lr: float, end_lr: float, steps: int):
    """Run the LR range test on ``model`` (trained in place), write its files in the run directory;
    returns the result and the summary written to lr_find.json."""
    from lanner._progress import progress_bar
    from lanner.engine.lr_find import (
        cycle_epochs,
        exponential_lrs,
        plot_lr_find,
        range_test,
        training_step_fn,
    )
    from lanner.engine.trainer import autocast_for

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
    write_text(s.run_dir / "lr_find.csv", result.to_csv())
    summary = {**result.to_dict(), "start_lr": start_lr, "end_lr": end_lr, "optimizer": config.optimizer}
    write_json(s.run_dir / "lr_find.json", summary)
    plot_lr_find(result, s.run_dir / "lr_find.png")
    return result, summary


def _auto_lr(s: _Session) -> None:
    """``--lr auto``: an LR range test on a copy of the fresh model picks the run's LR (process 0
    runs it, the others are told); the chosen number replaces "auto" in config.yaml."""
    lr = None
    if s.dist.is_main:
        result, _ = _range_test(s, copy.deepcopy(s.prepared.model), 1e-7, 10.0, 100)
        fallback = DEFAULT_LR[s.config.optimizer]
        lr = result.suggestion if result.suggestion is not None else fallback
        how = (
            "from the LR range test" if result.suggestion is not None else "the default: the loss never fell"
        )
        s.console.print(f"--lr auto: {lr:.2g} ({how}; curve in {s.run_dir / 'lr_find.png'})")
    s.config = s.config.model_copy(update={"lr": float(distributed.broadcast(lr, s.dist))})
    if s.dist.is_main:
        write_text(s.run_dir / "config.yaml", s.config.to_yaml())


def _print_lr_find(console: Console, config: TrainConfig, result, run_dir: Path) -> None:
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
    console.print(f"curve: {run_dir / 'lr_find.png'}  numbers: {run_dir / 'lr_find.csv'}")


def _print_plan(s: _Session, state: TrainState) -> None:
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


def _fit(s: _Session, optimizer, state: TrainState, evaluate_after: bool, tracker=None) -> Path:
    config, prepared, console, run_dir = s.config, s.prepared, s.console, s.run_dir
    trainer = Trainer(
        task=prepared.task,
        model=distributed.wrap(prepared.model, s.dist, s.device),
        optimizer=optimizer,
        state=state,
        run_dir=run_dir,
        device=s.device,
        precision=s.precision,
        console=console,
        extra_checkpoint={"config": config.model_dump(mode="json"), "model_name": prepared.model_name},
        time_budget_s=parse_duration(config.time) if config.time else None,
        freeze_epochs=config.freeze_epochs,
        dist=s.dist,
        tracker=tracker,
    )
    try:
        trainer.fit()
    except Interrupted:
        console.print(
            f"[yellow]stopped[/] at epoch {state.epoch + 1}, step {state.step_in_epoch} of "
            f"{trainer.steps_per_epoch}; checkpoint saved. Continue with: [bold]lanner resume {run_dir}[/]"
        )
        _finish_tracking(tracker, "KILLED")
        raise
    except BaseException:
        _finish_tracking(tracker, "FAILED")
        raise
    finally:
        distributed.stop(s.dist)
    if not s.dist.is_main:
        return run_dir
    if state.best_epoch is not None:
        console.print(f"best {state.monitor} {state.best_value:.4f} at epoch {state.best_epoch}")
    if evaluate_after:
        evaluate(run_dir, console=console)
    _finish_tracking(tracker, "FINISHED")
    console.print(f"run directory: [bold]{run_dir}[/]")
    return run_dir


def _finish_tracking(tracker, status: str) -> None:
    if tracker is not None:
        tracker.finish(status)


# ----------------------------------------------------------------------------------------- resume
def resume(
    run: str | Path, console: Console | None = None, *, evaluate_after: bool = True, **changes
) -> Path:
    """Continue a run from its last checkpoint, optionally with new settings (a new segment)."""
    console = _console(console)
    run_dir = Path(run)
    ckpt = load_checkpoint(find_checkpoint(run_dir, "last"))
    old = make_config(ckpt["config"], f"{run_dir}/checkpoints/last.ckpt")
    changes = {k: v for k, v in changes.items() if v is not None}
    unknown = set(changes) - set(RESUMABLE)
    if unknown:
        raise ConfigError(
            f"cannot change {', '.join(sorted(unknown))} on resume; resumable: {', '.join(RESUMABLE)}"
        )
    values = old.model_dump(mode="json")
    values.update(changes)
    config = make_config(values, "resume options")
    s = _start(config, console, run_dir)
    console, prepared = s.console, s.prepared
    prepared.model.load_state_dict(ckpt["state_dict"])
    optimizer = build_optimizer(prepared.model, config, base_lr(config))
    optimizer.load_state_dict(ckpt["optimizer"])
    state = TrainState.from_dict(ckpt["train_state"])
    state.history = state.history[: state.epoch]  # what the checkpoint saw is the truth
    spe = prepared.task.steps_per_epoch()
    if spe != state.segments[-1].steps_per_epoch:
        raise ConfigError(
            f"{run_dir}: {state.segments[-1].steps_per_epoch} steps per epoch when trained, {spe} now: "
            "resume on the same data with the same number of processes (--devices)"
        )
    before, after = old.model_dump(mode="json"), config.model_dump(mode="json")
    diff = {k: [before[k], after[k]] for k in changes if before[k] != after[k]}
    if diff:
        _add_segment(state, config, diff, spe)
    if s.dist.is_main:
        write_text(run_dir / "config.yaml", config.to_yaml())
    console.print(
        f"resuming [bold]{run_dir}[/] at epoch {state.epoch + 1}"
        + (f", step {state.step_in_epoch}" if state.step_in_epoch else "")
        + (f"; changes: {_fmt_diff(diff)}" if diff else "; no changes")
    )
    _print_plan(s, state)
    tracker = _tracker(s)
    if tracker is not None:
        tracker.resume(len(state.segments) - 1, diff)
    if s.dist.is_main:
        plot_schedule(state.segments, state.total_epochs * spe, spe, run_dir / "schedule.png")
    return _fit(s, optimizer, state, evaluate_after, tracker)


def _fmt_diff(diff: dict) -> str:
    def short(v):
        return v.get("name", v) if isinstance(v, dict) else v

    return ", ".join(f"{k} {short(a)} -> {short(b)}" for k, (a, b) in diff.items())


def _add_segment(state: TrainState, config: TrainConfig, diff: dict, steps_per_epoch: int) -> None:
    """Record the change as a new segment; re-lay the LR schedule only when LR-related settings changed."""
    prev = state.segments[-1]
    state.total_epochs = config.epochs
    state.patience = config.patience
    state.monitor = config.monitor or state.monitor
    seg = copy.deepcopy(prev)
    seg.index, seg.start_epoch, seg.start_step = prev.index + 1, state.epoch, state.step
    seg.reason, seg.changes, seg.time = "resume", diff, now()
    seg.end_step = config.epochs * steps_per_epoch
    if {"lr", "schedule"} & set(diff) or ("epochs" in diff and prev.end_step != seg.end_step):
        # A new schedule starts here, from the LR asked for (or the LR in effect now), without warmup.
        seg.origin_step = state.step
        seg.base_lr = config.lr if "lr" in diff else _lr_to_continue_from(state, prev)
        spec = copy.deepcopy(config.schedule) if "schedule" in diff else copy.deepcopy(prev.schedule)
        spec.warmup_epochs = 0.0
        seg.schedule = spec
    else:
        seg.origin_step = prev.start_step if prev.origin_step is None else prev.origin_step
    state.segments.append(seg)


def _lr_to_continue_from(state: TrainState, prev) -> float:
    """The LR in effect now, which a re-laid schedule starts from; refused when the old schedule had
    already decayed it to almost nothing (more epochs at LR ~0 would train nothing)."""
    lr = lr_at(state.segments, state.step)
    if lr < 0.01 * prev.base_lr:
        raise ConfigError(
            f"the schedule had brought the LR down to {lr:.2g} by epoch {state.epoch} (peak "
            f"{prev.base_lr:g}): more epochs from there would not train; give the LR for them, "
            f"e.g. --lr {prev.base_lr / 10:g}"
        )
    return lr


# ------------------------------------------------------------------------------------- schedule
def schedule_preview(
    config: TrainConfig,
    steps_per_epoch: int | None = None,
    out: str | Path | None = None,
    num_images: int | None = None,
) -> tuple[list[tuple[int, float, float]], Path]:
    """The LR per epoch and a plot of it, before any training (no data needed with steps_per_epoch)."""
    if steps_per_epoch is None:
        if num_images is None:
            raise ConfigError("give steps per epoch, the number of images, or DATA to count them")
        steps_per_epoch = -(-num_images // (config.batch_size or 32))
    seg = first_segment(config, steps_per_epoch)
    out = Path(out or "schedule.png")
    plot_schedule([seg], config.epochs * steps_per_epoch, steps_per_epoch, out)
    return schedule_table([seg], config.epochs, steps_per_epoch), out


def count_images(data: str, format: str | None = None) -> int:
    from lanner.data.formats import read_dataset

    return sum(1 for r in read_dataset(data, format).records if r.split in (None, "train"))


# ---------------------------------------------------------------------------------- eval/predict
def evaluate(
    run: str | Path,
    data: str | None = None,
    split: str | None = None,
    console: Console | None = None,
    report: bool = True,
    **detect_options,
) -> dict:
    """Metrics of a run; ``device``/``precision`` in ``detect_options`` too (see ``load_for_inference``).

    Detection runs take ``tile=N``, ``overlap=F`` (``tile=0``: whole images).
    """
    from lanner.eval.evaluate import evaluate_run

    metrics = evaluate_run(Path(run), data, split, _console(console), **detect_options)
    if report:
        _maybe_report(Path(run), _console(console))
    return metrics


def predict(
    run: str | Path,
    inputs: list[str],
    out: str | Path | None = None,
    topk: int = 5,
    console: Console | None = None,
    **kwargs,
) -> list[dict]:
    from lanner.predict.classify import predict_files

    return predict_files(Path(run), inputs, out, topk=topk, console=_console(console), **kwargs)


def check(data: str, format: str | None = None, strict: bool = False) -> dict:
    from lanner.data.check import check_dataset

    return check_dataset(data, format, strict=strict)


def convert(data: str, to: str, out: str | Path, format: str | None = None, strict: bool = False):
    """Convert ``data`` to another format; returns (output path, the dataset as read, with its issues)."""
    from lanner.data.convert import convert_dataset
    from lanner.data.formats import read_dataset

    dataset = read_dataset(data, format, **({"strict": True} if strict else {}))
    return convert_dataset(dataset, to, out, data), dataset


def report(run: str | Path, out: str | Path | None = None) -> Path:
    from lanner.report import build_report

    return build_report(Path(run), out)


def _maybe_report(run_dir: Path, console: Console) -> None:
    from lanner.report import build_report

    console.print(f"report: {build_report(run_dir)}")


# ------------------------------------------------------------------------- small verbs for the CLI
def export(run: str | Path, out: str | Path | None = None, *, check: bool = True) -> dict:
    """The run's model as one ONNX file plus a JSON spec (see :func:`lanner.export.export_run`)."""
    from lanner.export import export_run

    return export_run(run, out, check=check)


def list_models(task: str = "classify", pattern: str = "*") -> list[str]:
    from lanner.models import list_models as names

    return names(task, pattern)


def demo(
    task: str = "classify",
    run: str | None = None,
    data_dir: str | Path | None = None,
    console: Console | None = None,
) -> Path:
    """The built-in example end to end: write data, train, evaluate, predict, report."""
    from lanner.demo import run_demo

    return run_demo(task=task, run=run, data_dir=Path(data_dir) if data_dir else None, console=console)


def relaunch(devices: int) -> None:
    """With ``devices`` other than 1, replace this process by torchrun starting that many copies of
    the same command, unless this process already is one of them."""
    import os

    if devices != 1 and "WORLD_SIZE" not in os.environ:
        distributed.relaunch_under_torchrun(devices)


def summarise(dataset) -> dict:
    """What ``lanner check`` reports of a dataset as read (e.g. the one ``convert`` returns)."""
    from lanner.data.check import summarise as summary_of

    return summary_of(dataset, [])


def set_max_image_pixels(pixels: int | None) -> None:
    """Pillow's decompression-bomb limit for this process (0: none; None: leave it)."""
    from lanner.data.images import set_max_image_pixels as set_limit

    set_limit(pixels)


_current_run_dir: Path | None = None  # set where a new run's directory is made (train, lr-find)


def current_run_dir() -> Path | None:
    """The directory of the run this process is making, once made (None before, or when unknown)."""
    return _current_run_dir
