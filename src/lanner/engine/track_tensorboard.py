"""``--track tensorboard``: event files under ``RUN/tb/`` (``tensorboard --logdir RUN/tb``).

Per epoch: every number of the history.csv row (losses, metrics, LR, speed) as a scalar of the same
name at step = epoch. At the end (or on Ctrl-C): the training-curves image, and the config as
hyperparameters with the validation metrics as their metrics (TensorBoard's HParams tab). A resume
writes a new event file in the same folder, so TensorBoard shows one run whose steps continue.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from rich.console import Console

from lanner.engine.callbacks import Callback, RunStart
from lanner.engine.tracking import Guard, TrackerSettings, numbers, register_tracker, save_state
from lanner.errors import ConfigError
from lanner.rundir import RunDir


def hparam_values(config: dict, prefix: str = "") -> dict:
    """A nested config as the flat ``{name: bool|int|float|str}`` TensorBoard's HParams accepts."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(hparam_values(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, bool | int | float | str) else str(v)
    return out


@register_tracker("tensorboard")
class TensorBoardTracker(Callback):
    def __init__(self, settings: TrackerSettings, console: Console) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ConfigError(
                "--track tensorboard needs the tensorboard package: pip install 'lanner[tensorboard]'"
            ) from e
        self.run = RunDir(settings.run_dir)
        self.settings, self.console = settings, console
        self.guard = Guard(f"TensorBoard in {self.run.tensorboard}", console)
        self.writer = SummaryWriter(log_dir=str(self.run.tensorboard))
        self.config: dict = {}
        self.last_row: dict = {}

    def on_start(self, start: RunStart) -> None:
        self.config = start.config
        if not start.resumed and self.settings.tags:
            self.writer.add_text("tags", ", ".join(self.settings.tags))
        if start.resumed:  # HParams keeps the first start's config; each resume's changes are text
            self.writer.add_text(f"segment {start.segment}", json.dumps(start.changes) or "resumed")
        save_state(self.run.path, "tensorboard", {"logdir": self.run.tensorboard.name})  # relative to RUN
        verb = "continuing" if start.resumed else "writing"
        self.console.print(f"tracking: {verb} TensorBoard events in {self.run.tensorboard}")

    def on_epoch_end(self, row: dict) -> None:
        self.last_row = row
        self.guard(self._log_scalars, numbers(row), int(row["epoch"]))

    def on_stop(self, status: str) -> None:
        step = int(self.last_row.get("epoch", 0))
        self.guard(self._log_curves, step)
        self.guard(self._log_hparams)
        self.guard(self.writer.close)

    def _log_scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()  # an epoch's numbers are on disk as soon as the epoch is

    def _log_curves(self, step: int) -> None:
        path = self.run.curves_plot
        if path.is_file():
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB"))  # HxWx3 uint8
            self.writer.add_image("curves", pixels, step, dataformats="HWC")

    def _log_hparams(self) -> None:
        """The config as hyperparameters; the validation scalars already logged are its metrics."""
        from torch.utils.tensorboard.summary import hparams

        metrics = {k: v for k, v in numbers(self.last_row).items() if k.startswith("val_")}
        for summary in hparams(hparam_values(self.config), metrics):
            self.writer.file_writer.add_summary(summary)
