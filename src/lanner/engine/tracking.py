"""Experiment tracking: a run mirrored into trackers while it trains (``--track mlflow,tensorboard``).

Trackers are callbacks registered by name; each lives in its own module (``track_mlflow``,
``track_tensorboard``, ``track_wandb``), imported on first use so that a run without tracking never
loads their libraries. ``--track`` takes one name or several, comma-separated; they all see the
same callbacks in the same order.

One lanner run is one tracker run for its whole life: each tracker keeps what it needs to find its
run again (an MLflow run id, a W&B run id, the TensorBoard folder) under its name in
``RUN/tracking.json``, and ``lanner resume`` continues that run.

Tracking must never cost a run: a tracker checks what it can at construction (a clear error before
any training), and a failure while training is printed once and training goes on (:class:`Guard`).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from lanner._io import write_json
from lanner.errors import ConfigError
from lanner.rundir import RunDir

# The run directory's files a tracker copies at the end (those that exist).
ARTIFACTS = (
    "history.csv",
    "segments.json",
    "config.yaml",
    "hardware.json",
    "metrics.json",
    "report.html",
    "schedule.png",
    "plots/curves.png",
)
BUILTIN = ("mlflow", "tensorboard", "wandb")


@dataclass
class TrackerSettings:
    """What every tracker is built from: the run directory and the user's tracking options."""

    run_dir: Path
    uri: str | None = None  # MLflow's server (W&B and TensorBoard ignore it)
    experiment: str = "lanner"  # MLflow experiment, W&B project
    name: str | None = None  # the tracker run's name (default: the run directory's)
    tags: list[str] = field(default_factory=list)

    @property
    def run_name(self) -> str:
        return self.name or Path(self.run_dir).name


_TRACKERS: dict[str, type] = {}


def register_tracker(name: str):
    """Class decorator: ``--track NAME`` builds this tracker as ``cls(settings, console)``."""

    def wrap(cls: type) -> type:
        if name in _TRACKERS:
            raise ValueError(f"tracker {name!r} is already registered")
        _TRACKERS[name] = cls
        return cls

    return wrap


def _load_builtin() -> None:
    """Import the built-in tracker modules; each registers itself on import."""
    for name in BUILTIN:
        if name not in _TRACKERS:
            importlib.import_module(f"lanner.engine.track_{name}")


def tracker_names() -> list[str]:
    _load_builtin()
    return sorted(_TRACKERS)


def tracker_kinds(track: str | None) -> list[str]:
    """``"tensorboard, mlflow"`` -> ``["tensorboard", "mlflow"]`` (None or empty: no tracking)."""
    kinds = [k.strip() for k in (track or "").split(",") if k.strip()]
    return list(dict.fromkeys(kinds))


def check_tracker(track: str | None) -> None:
    """Every name in ``track`` is a registered tracker (else a ConfigError naming the known ones)."""
    known = tracker_names()
    for kind in tracker_kinds(track):
        if kind not in known:
            raise ConfigError(f"--track {kind!r}: lanner knows {', '.join(known)}")


def make_trackers(track: str | None, settings: TrackerSettings, console: Console) -> list:
    """The trackers ``track`` names, in its order; each checks what it can before training."""
    check_tracker(track)
    return [_TRACKERS[kind](settings, console) for kind in tracker_kinds(track)]


# ----------------------------------------------------------------- helpers the trackers share
def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """A nested config as ``{"schedule.name": "cosine", ...}`` with string values."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list | tuple) else str(v)
    return out


def numbers(row: dict) -> dict[str, float]:
    """The history row's numbers as metrics (the epoch is the step, not a metric)."""
    return {k: float(v) for k, v in row.items() if k != "epoch" and isinstance(v, int | float)}


def read_state(run_dir: Path, kind: str) -> dict:
    """What tracker ``kind`` saved in RUN/tracking.json ({} when nothing). The 0.1.0 file held one
    MLflow run as ``{"backend": "mlflow", ...}``."""
    path = RunDir(run_dir).tracking
    state = json.loads(path.read_text()) if path.is_file() else {}
    if "backend" in state:
        state = {state["backend"]: state}
    return state.get(kind, {})


def save_state(run_dir: Path, kind: str, values: dict) -> None:
    """Tracker ``kind``'s entry in RUN/tracking.json (the other trackers' entries are kept)."""
    path = RunDir(run_dir).tracking
    state = json.loads(path.read_text()) if path.is_file() else {}
    if "backend" in state:
        state = {state["backend"]: state}
    write_json(path, {**state, kind: values})


class Guard:
    """Runs tracker calls; the first failure is printed (training goes on), later ones are silent."""

    def __init__(self, label: str, console: Console) -> None:
        self.label, self.console, self.warned = label, console, False

    def __call__(self, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - tracking trouble is never fatal
            if not self.warned:
                self.console.print(f"[yellow]tracking: {self.label} failed ({e}); training goes on[/]")
                self.warned = True
