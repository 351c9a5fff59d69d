"""`lanner models NAME` and `lanner models RUN`: a layer summary of a model by name or of a trained run,
with the parts the run's ``--freeze`` froze marked (what one inspects to choose a fine-tuning layer)."""

from __future__ import annotations

from pathlib import Path

from lanner.models.summary import ModelSummary, summarise_model
from lanner.models.weights import apply_freeze, parse_freeze
from lanner.tasks.base import get_task
from lanner.tasks.loading import load_run


def summarise_name(task: str, name: str, image_size: int | None = None, depth: int = 1) -> ModelSummary:
    model, sample = get_task(task).summary_model(name, image_size)
    return summarise_model(model, sample, name, depth)


def summarise_run(run: str | Path, image_size: int | None = None, depth: int = 1) -> ModelSummary:
    loaded = load_run(run)
    sample = loaded.task.summary_input(loaded.meta, image_size)
    plan = parse_freeze(loaded.config.freeze, loaded.config.freeze_epochs)
    if plan is not None:
        apply_freeze(loaded.model, plan, frozen=True)
    summary = summarise_model(loaded.model, sample, f"{run} ({loaded.meta.model_name})", depth)
    summary.notes.append(plan.describe() if plan else "frozen: nothing (the whole model trained)")
    return summary
