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
from pathlib import Path

from rich.console import Console

from lanner._io import write_json
from lanner.errors import ConfigError

STATE_FILE = "tracking.json"
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


class MLflowTracker:
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
        write_json(self.run_dir / STATE_FILE, {"backend": "mlflow", "uri": self.uri, "run_id": self.run_id})
        self.console.print(f"tracking: MLflow run {self.run_id} at {self.uri}")

    def resume(self, segment: int, changes: dict) -> None:
        """Continue the lanner run's MLflow run; the resume's changes become a tag."""
        state = json.loads((self.run_dir / STATE_FILE).read_text())
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
        import time

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


def make_tracker(kind: str | None, run_dir: Path, uri: str | None, experiment: str, console: Console):
    if kind is None:
        return None
    if kind != "mlflow":
        raise ConfigError(f"--track {kind!r}: only 'mlflow' is supported")
    return MLflowTracker(run_dir, uri, experiment, console)
