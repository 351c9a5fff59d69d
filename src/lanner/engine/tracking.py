"""Experiment tracking: a run mirrored into MLflow while it trains (``--track mlflow``).

One lanner run is one MLflow run, for its whole life: ``lanner resume`` continues the same MLflow
run (its id is kept in ``RUN/tracking.json``) and each resume's changes become a tag, so the
history of LR changes lives next to the curves. Per epoch: every number of the history row
(losses, metrics, LR, speed) as metrics at step = epoch. At the start: the full config as params,
the hardware and lanner's version as tags. At the end (or on Ctrl-C): history.csv, segments.json,
config.yaml, the plots, metrics.json and report.html as artifacts.

Tracking must never cost a run: the server is checked once at the start (a clear error naming the
address when it cannot be reached, before any training), and a failure while training is printed
once and training goes on; everything stays in the run directory either way.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from rich.console import Console

from lanner._io import write_json
from lanner.engine.callbacks import Callback, RunStart
from lanner.errors import ConfigError
from lanner.rundir import RunDir

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


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list | tuple) else str(v)
    return out


_TRACKERS: dict[str, type] = {}


def register_tracker(name: str):
    """Class decorator: ``--track NAME`` builds this tracker as ``cls(run_dir, uri, experiment, console)``."""

    def wrap(cls: type) -> type:
        if name in _TRACKERS:
            raise ValueError(f"tracker {name!r} is already registered")
        _TRACKERS[name] = cls
        return cls

    return wrap


def tracker_names() -> list[str]:
    return sorted(_TRACKERS)


@register_tracker("mlflow")
class MLflowTracker(Callback):
    def __init__(self, run_dir: Path, uri: str | None, experiment: str, console: Console) -> None:
        try:
            import mlflow
        except ImportError as e:
            raise ConfigError("--track mlflow needs the mlflow package: pip install 'lanner[track]'") from e
        # Fail fast on a wrong address instead of retrying for minutes (MLflow's default).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.run_dir, self.console = Path(run_dir), console
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        self.uri = uri or mlflow.get_tracking_uri()
        self._warned = False
        try:
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        except Exception as e:  # noqa: BLE001 - any client error: the server is not usable
            raise ConfigError(
                f"MLflow tracking server {self.uri}: cannot reach it ({type(e).__name__}: {e})"
            ) from e
        self.run_id: str | None = None

    # ------------------------------------------------------------------------------ callbacks
    def on_start(self, start: RunStart) -> None:
        if start.resumed:
            self.resume(start.segment, start.changes)
        else:
            self.start(start.config, start.tags)

    def on_epoch_end(self, row: dict) -> None:
        self.log_epoch(row)

    def on_stop(self, status: str) -> None:
        self.finish(status)

    # ------------------------------------------------------------------------------ run lifecycle
    def start(self, config: dict, tags: dict) -> None:
        """A new MLflow run for a new lanner run; its id is saved in RUN/tracking.json."""
        run = self.client.create_run(
            self.experiment_id, run_name=self.run_dir.name, tags={**tags, "lanner.run_dir": str(self.run_dir)}
        )
        self.run_id = run.info.run_id
        params = _flatten(config)
        items = list(params.items())
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            from mlflow.entities import Param

            self.client.log_batch(
                self.run_id, params=[Param(k, v[:6000]) for k, v in items[start : start + 100]]
            )
        write_json(
            RunDir(self.run_dir).tracking, {"backend": "mlflow", "uri": self.uri, "run_id": self.run_id}
        )
        self.console.print(f"tracking: MLflow run {self.run_id} at {self.uri}")

    def resume(self, segment: int, changes: dict) -> None:
        """Continue the lanner run's MLflow run; the resume's changes become a tag."""
        state = json.loads(RunDir(self.run_dir).tracking.read_text())
        self.run_id = state["run_id"]
        self.client.update_run(self.run_id, status="RUNNING")
        self.client.set_tag(
            self.run_id, f"lanner.segment.{segment}", json.dumps(changes) if changes else "resumed"
        )
        self.console.print(f"tracking: continuing MLflow run {self.run_id} at {self.uri}")

    def log_epoch(self, row: dict) -> None:
        metrics = {k: float(v) for k, v in row.items() if k != "epoch" and isinstance(v, int | float)}
        self._safely(self._log_metrics, metrics, int(row["epoch"]))

    def finish(self, status: str = "FINISHED") -> None:
        """Artifacts from the run directory, then the run's status (FINISHED, KILLED or FAILED)."""
        self._safely(self._log_artifacts)
        self._safely(self.client.set_terminated, self.run_id, status)

    # ------------------------------------------------------------------------------------ helpers
    def _log_metrics(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def _log_artifacts(self) -> None:
        for name in ARTIFACTS:
            path = self.run_dir / name
            if path.is_file():
                self.client.log_artifact(
                    self.run_id, str(path), str(Path(name).parent) if "/" in name else None
                )

    def _safely(self, fn, *args) -> None:
        """Tracking trouble in the middle of a run is reported once, never fatal."""
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            if not self._warned:
                self.console.print(
                    f"[yellow]tracking: MLflow at {self.uri} failed ({e}); training goes on[/]"
                )
                self._warned = True


def check_tracker(kind: str) -> None:
    if kind not in _TRACKERS:
        raise ConfigError(f"--track {kind!r}: lanner knows {', '.join(tracker_names())}")


def make_tracker(kind: str | None, run_dir: Path, uri: str | None, experiment: str, console: Console):
    """The tracker registered as ``kind`` (None: no tracking); it checks its server before training."""
    if kind is None:
        return None
    check_tracker(kind)
    return _TRACKERS[kind](run_dir, uri, experiment, console)
