"""Several trained runs used as one model (``lanner eval RUN1 RUN2 ...``, ``lanner predict RUN1 RUN2 ...``).

The runs must be of one task and share their classes (same names, same order) but may differ in
model, input size and preprocessing: each member prepares the images its own way, and only their
outputs are combined (classifiers: weighted mean of the probabilities; detectors: weighted box
fusion, :func:`lanner.predict.merge.fuse_models`). An ensemble's outputs go to ``RUN1/ensemble/``
(laid out like a run's: metrics.json, eval/, predictions/) with ``ensemble.json`` naming the runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lanner._io import write_json
from lanner.engine.distributed import WHOLE, Part
from lanner.errors import ConfigError
from lanner.rundir import RunDir
from lanner.tasks.base import Task
from lanner.tasks.loading import LoadedRun, load_for_inference

ENSEMBLE_DIR = "ensemble"


@dataclass
class Ensemble:
    members: list[LoadedRun]
    weights: list[float]  # one per member, summing to 1

    @property
    def classes(self) -> list[str]:
        return self.members[0].classes

    @property
    def task(self) -> Task:
        return self.members[0].task

    @property
    def run(self) -> RunDir:
        """Where the ensemble's outputs go: RUN1/ensemble (a run directory's layout)."""
        return RunDir(self.members[0].run.path / ENSEMBLE_DIR)

    def describe(self) -> str:
        parts = [
            f"{m.run.path} ({m.meta.model_name}, weight {w:.3g})"
            for m, w in zip(self.members, self.weights, strict=True)
        ]
        return f"ensemble of {len(self.members)} runs: " + ", ".join(parts)

    def record(self, headline: dict[str, float | None]) -> None:
        """ensemble.json: the runs combined, their weights and each member's headline metric."""
        members = [
            {
                "run": str(m.run.path),
                "model": m.meta.model_name,
                "weight": w,
                "headline": headline.get(str(m.run.path)),
            }
            for m, w in zip(self.members, self.weights, strict=True)
        ]
        write_json(
            self.run / "ensemble.json", {"task": self.task.name, "classes": self.classes, "members": members}
        )


def ensemble_weights(weights: list[float] | None, count: int) -> list[float]:
    """``--weights 2,1,1`` normalised to sum 1 (equal weights when not given)."""
    if weights is None:
        return [1.0 / count] * count
    if len(weights) != count:
        raise ConfigError(f"--weights: {len(weights)} weight(s) for {count} runs; give one per run, in order")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"--weights {','.join(f'{w:g}' for w in weights)}: weights must be >= 0, not all 0")
    return [w / sum(weights) for w in weights]


def check_compatible(members: list[LoadedRun]) -> None:
    """Runs combine when they share task and classes (in order); else a ConfigError naming the difference."""
    first = members[0]
    for other in members[1:]:
        where = f"{other.run.path} cannot join an ensemble with {first.run.path}"
        if other.meta.task != first.meta.task:
            raise ConfigError(f"{where}: it is a {other.meta.task} run, the other a {first.meta.task} run")
        if other.classes != first.classes:
            raise ConfigError(f"{where}: {_class_difference(first.classes, other.classes)}")


def _class_difference(a: list[str], b: list[str]) -> str:
    only_a, only_b = [c for c in a if c not in b], [c for c in b if c not in a]
    if not only_a and not only_b:
        return f"the classes are in another order ({', '.join(b)} vs {', '.join(a)})"
    parts = [f"classes only in the first: {', '.join(only_a)}" if only_a else "",
             f"classes only in this one: {', '.join(only_b)}" if only_b else ""]  # fmt: skip
    return "; ".join(p for p in parts if p)


def load_ensemble(runs: list[str | Path], weights: list[float] | None, device: str = "auto",
                  precision: str = "auto", part: Part = WHOLE) -> Ensemble:  # fmt: skip
    """The runs as one model; ``part``: this process's share of the images (every member's)."""
    chosen = ensemble_weights(weights, len(runs))
    members = [load_for_inference(run, device, precision, part=part) for run in runs]
    check_compatible(members)
    return Ensemble(members, chosen)
