"""``--track mlflow``: the run mirrored into an MLflow tracking server.

Per epoch: every number of the history row (losses, metrics, LR, speed) as metrics at step = epoch.
At the start: the full config as params, the hardware, lanner's version and ``--tags`` as tags. At
the end (or on Ctrl-C): the run directory's files (:data:`~lanner.engine.tracking.ARTIFACTS`) as
artifacts. A resume continues the same MLflow run and records its changes as a tag, so the history
of LR changes lives next to the curves. The server is checked once at the start (a clear error
naming the address when it cannot be reached, before any training).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from rich.console import Console

from lanner.engine.callbacks import Callback, RunStart
from lanner.engine.tracking import (
    ARTIFACTS,
    Guard,
    TrackerSettings,
    flatten,
    numbers,
    read_state,
    register_tracker,
    save_state,
)
from lanner.errors import ConfigError


@register_tracker("mlflow")
class MLflowTracker(Callback):
    def __init__(self, settings: TrackerSettings, console: Console) -> None:
        try:
            import mlflow
        except ImportError as e:
            raise ConfigError("--track mlflow needs the mlflow package: pip install 'lanner[track]'") from e
        # Fail fast on a wrong address instead of retrying for minutes (MLflow's default).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.settings, self.console = settings, console
        self.run_dir = Path(settings.run_dir)
        self.client = mlflow.MlflowClient(tracking_uri=settings.uri)
        self.uri = settings.uri or mlflow.get_tracking_uri()
        self.guard = Guard(f"MLflow at {self.uri}", console)
        try:
            found = self.client.get_experiment_by_name(settings.experiment)
            self.experiment_id = (
                found.experiment_id if found else self.client.create_experiment(settings.experiment)
            )
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
        self.guard(self._log_metrics, numbers(row), int(row["epoch"]))

    def on_stop(self, status: str) -> None:
        """Artifacts from the run directory, then the run's status (FINISHED, KILLED or FAILED)."""
        self.guard(self._log_artifacts)
        self.guard(self.client.set_terminated, self.run_id, status)

    # ------------------------------------------------------------------------------ run lifecycle
    def start(self, config: dict, tags: dict) -> None:
        """A new MLflow run for a new lanner run; its id is saved in RUN/tracking.json."""
        user_tags = dict(t.partition("=")[::2] for t in self.settings.tags)  # "team=vision", "baseline"
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.settings.run_name,
            tags={**tags, **user_tags, "lanner.run_dir": str(self.run_dir)},
        )
        self.run_id = run.info.run_id
        self._log_params(flatten(config))
        save_state(self.run_dir, "mlflow", {"uri": self.uri, "run_id": self.run_id})
        self.console.print(f"tracking: MLflow run {self.run_id} at {self.uri}")

    def resume(self, segment: int, changes: dict) -> None:
        """Continue the lanner run's MLflow run; the resume's changes become a tag."""
        self.run_id = read_state(self.run_dir, "mlflow")["run_id"]
        self.client.update_run(self.run_id, status="RUNNING")
        self.client.set_tag(
            self.run_id, f"lanner.segment.{segment}", json.dumps(changes) if changes else "resumed"
        )
        self.console.print(f"tracking: continuing MLflow run {self.run_id} at {self.uri}")

    # ------------------------------------------------------------------------------------ helpers
    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = list(params.items())
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            batch = [Param(k, v[:6000]) for k, v in items[start : start + 100]]
            self.client.log_batch(self.run_id, params=batch)

    def _log_metrics(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def _log_artifacts(self) -> None:
        for name in ARTIFACTS:
            path = self.run_dir / name
            if path.is_file():
                folder = str(Path(name).parent) if "/" in name else None
                self.client.log_artifact(self.run_id, str(path), folder)
