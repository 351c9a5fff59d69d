"""``--track wandb``: the run mirrored into Weights & Biases (project = ``--experiment``).

Works offline with ``WANDB_MODE=offline`` (the run is written under ``RUN/wandb/`` and uploaded later
with ``wandb sync``). At the start: the config, ``--run-name`` (default: the run directory's name)
and ``--tags``. Per epoch: every number of the history.csv row at step = epoch. At the end: the
training-curves image, then the run is finished with the lanner run's status. A resume continues
the same W&B run (its id is kept in ``RUN/tracking.json``) and adds its changes to the run's config
as ``lanner.segment.N``.
"""

from __future__ import annotations

import os

from rich.console import Console

from lanner.engine.callbacks import Callback, RunStart
from lanner.engine.tracking import Guard, TrackerSettings, numbers, read_state, register_tracker, save_state
from lanner.errors import ConfigError
from lanner.rundir import RunDir

EXIT_CODES = {"FINISHED": 0, "FAILED": 1, "KILLED": 130}


@register_tracker("wandb")
class WandbTracker(Callback):
    def __init__(self, settings: TrackerSettings, console: Console) -> None:
        try:
            import wandb
        except ImportError as e:
            raise ConfigError("--track wandb needs the wandb package: pip install 'lanner[wandb]'") from e
        self.wandb, self.settings, self.console = wandb, settings, console
        self.run_dir = RunDir(settings.run_dir)
        self.guard = Guard("W&B", console)
        self.run = None
        self.last_epoch = 0

    def on_start(self, start: RunStart) -> None:
        resume_id = read_state(self.run_dir.path, "wandb").get("id") if start.resumed else None
        self.run = self._init(start.config, resume_id)
        if start.resumed:
            segment = {f"lanner.segment.{start.segment}": start.changes or "resumed"}
            self.guard(self.run.config.update, segment)
        save_state(self.run_dir.path, "wandb", {"id": self.run.id, "project": self.settings.experiment})
        verb = "continuing" if start.resumed else "started"
        self.console.print(f"tracking: {verb} W&B run {self.run.id} ({self._where()})")

    def on_epoch_end(self, row: dict) -> None:
        self.last_epoch = int(row["epoch"])
        self.guard(self.run.log, numbers(row), step=self.last_epoch)

    def on_stop(self, status: str) -> None:
        curves = self.run_dir.curves_plot
        if curves.is_file():
            self.guard(self.run.log, {"curves": self.wandb.Image(str(curves))}, step=self.last_epoch)
        self.guard(self.run.finish, exit_code=EXIT_CODES.get(status, 1))

    def _init(self, config: dict, resume_id: str | None):
        """wandb.init, with W&B's own errors (no API key, ...) turned into one clear message."""
        try:
            return self.wandb.init(
                project=self.settings.experiment,
                name=self.settings.run_name,
                tags=self.settings.tags or None,
                config=None if resume_id else config,
                dir=str(self.run_dir.path),
                id=resume_id,
                resume="allow" if resume_id else None,
                settings=self.wandb.Settings(console="off", silent=True),
            )
        except Exception as e:  # noqa: BLE001 - any init error: W&B is not usable
            raise ConfigError(
                f"W&B: cannot start a run ({type(e).__name__}: {e}); log in with `wandb login`, "
                "set WANDB_API_KEY, or track offline with WANDB_MODE=offline"
            ) from e

    def _where(self) -> str:
        if _offline():
            return f"offline in {self.run_dir.wandb}; upload with `wandb sync`"
        return f"project {self.settings.experiment}"


def _offline() -> bool:
    return os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun")
