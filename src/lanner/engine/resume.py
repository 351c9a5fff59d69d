"""Resume with overrides: continue a run from its last checkpoint, optionally with new settings,
recorded as a new segment of the same run (its history, LR schedule and tracker run go on)."""

from __future__ import annotations

import copy
from pathlib import Path

from lanner.config import TrainConfig, make_config
from lanner.engine.checkpoint import load_checkpoint
from lanner.engine.schedules import lr_at, next_segment
from lanner.engine.setup import now
from lanner.engine.trainer import TrainState
from lanner.errors import ConfigError
from lanner.rundir import RunDir

RESUMABLE = ("lr", "epochs", "schedule", "patience", "monitor", "time", "sync_bn")
UNFROZEN = {"freeze": None, "freeze_epochs": 0}  # what --unfreeze changes


def resumed_config(
    run: RunDir, changes: dict, unfreeze: bool = False
) -> tuple[dict, TrainConfig, TrainConfig]:
    """(the last checkpoint, the config it was trained with, the config to go on with); ``unfreeze``
    drops the run's --freeze from here on."""
    ckpt = load_checkpoint(run.find_checkpoint("last"))
    old = make_config(ckpt["config"], str(run.checkpoint("last")))
    unknown = set(changes) - set(RESUMABLE)
    if unknown:
        raise ConfigError(
            f"cannot change {', '.join(sorted(unknown))} on resume; resumable: {', '.join(RESUMABLE)}"
        )
    if unfreeze:
        if not (old.freeze or old.freeze_epochs):
            raise ConfigError(f"--unfreeze: {run.path} was trained with nothing frozen (no --freeze)")
        changes = {**changes, **UNFROZEN}
    return ckpt, old, make_config({**old.model_dump(mode="json"), **changes}, "resume options")


def restore_state(ckpt: dict, run_dir: Path, steps_per_epoch: int) -> TrainState:
    state = TrainState.from_dict(ckpt["train_state"])
    state.history = state.history[: state.epoch]  # what the checkpoint saw is the truth
    if steps_per_epoch != state.segments[-1].steps_per_epoch:
        raise ConfigError(
            f"{run_dir}: {state.segments[-1].steps_per_epoch} steps per epoch when trained, "
            f"{steps_per_epoch} now: resume on the same data with the same number of processes (--devices)"
        )
    return state


def changed(old: TrainConfig, new: TrainConfig, keys) -> dict:
    """{key: [before, after]} for the keys whose value differs."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    return {k: [before[k], after[k]] for k in keys if before[k] != after[k]}


def describe_changes(diff: dict) -> str:
    def short(v):
        return v.get("name", v) if isinstance(v, dict) else ("none" if v is None else v)

    return ", ".join(f"{k} {short(a)} -> {short(b)}" for k, (a, b) in diff.items())


def add_segment(state: TrainState, config: TrainConfig, diff: dict, steps_per_epoch: int) -> None:
    """Record the change as a new segment; re-lay the LR schedule only when LR-related settings changed."""
    prev = state.segments[-1]
    state.total_epochs = config.epochs
    state.patience = config.patience
    state.monitor = config.monitor or state.monitor
    seg = next_segment(prev, state.epoch, state.step, "resume", diff, now())
    seg.end_step = config.epochs * steps_per_epoch
    if {"lr", "schedule"} & set(diff) or ("epochs" in diff and prev.end_step != seg.end_step):
        # A new schedule starts here, from the LR asked for (or the LR in effect now), without warmup.
        seg.origin_step = state.step
        seg.base_lr = config.lr if "lr" in diff else _lr_to_continue_from(state, prev)
        spec = copy.deepcopy(config.schedule) if "schedule" in diff else copy.deepcopy(prev.schedule)
        spec.warmup_epochs = 0.0
        seg.schedule = spec
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
