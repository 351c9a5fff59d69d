"""``--pretrained`` for every task: resolve it, load it with a report in RUN/pretrained.json, and
give the weights' preprocessing back so a resumed run (and eval, predict, export) sees the same."""

from __future__ import annotations

import json

from rich.console import Console
from torch import nn

from lanner._io import write_json
from lanner.config import TrainConfig
from lanner.models.pretrained import WeightsSource, resolve_source
from lanner.models.transfer import Classes, load_pretrained, summary
from lanner.rundir import RunDir


def weights_source(config: TrainConfig, model: nn.Module, fresh: bool) -> WeightsSource | None:
    """The run's pretrained weights, resolved (nothing read yet); None on a resume or without any."""
    return resolve_source(config.pretrained, model) if fresh and config.pretrained else None


def weights_data_cfg(source: WeightsSource | None, run: RunDir) -> dict:
    """What the weights expect of inputs (mean, std, input_size, crop_pct, interpolation): the source's
    for a new run, what RUN/pretrained.json recorded for a resumed one, {} when neither says."""
    if source is not None:
        return dict(source.data_cfg)
    if run.pretrained.is_file():
        return json.loads(run.pretrained.read_text()).get("preprocessing") or {}
    return {}


def start_from(
    source: WeightsSource, model: nn.Module, classes: Classes, run: RunDir, console: Console
) -> None:
    """Load the weights, print what was loaded and write RUN/pretrained.json."""
    report = load_pretrained(model, source, classes)
    write_json(run.pretrained, report)
    for line in summary(report):
        console.print(line, highlight=False, soft_wrap=True)
