"""The run directory and the checkpoint schema: every path of docs/run-directory.md, named once.

:class:`RunDir` owns the layout of one run's directory, so no other module spells a file name of
it. :class:`CheckpointMeta` is what a checkpoint says about its model (task, classes, model name,
preprocessing, tiling, config, lanner's version); it is written in one place
(:meth:`CheckpointMeta.to_checkpoint`) and read in one place (:meth:`CheckpointMeta.from_checkpoint`),
which also reads the checkpoints of lanner 0.1.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lanner import __version__
from lanner.errors import CheckpointError


@dataclass(frozen=True)
class RunDir:
    """One run's directory; each property is a path in it (nothing is created here)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    config = property(lambda self: self.path / "config.yaml")
    history = property(lambda self: self.path / "history.csv")
    segments = property(lambda self: self.path / "segments.json")
    data_check = property(lambda self: self.path / "data_check.json")
    split = property(lambda self: self.path / "split.csv")
    hardware = property(lambda self: self.path / "hardware.json")
    schedule_plot = property(lambda self: self.path / "schedule.png")
    curves_plot = property(lambda self: self.path / "plots" / "curves.png")
    checkpoints = property(lambda self: self.path / "checkpoints")
    metrics = property(lambda self: self.path / "metrics.json")
    thresholds = property(lambda self: self.path / "thresholds.json")  # per-class, chosen on val
    eval = property(lambda self: self.path / "eval")
    eval_predictions = property(lambda self: self.path / "eval" / "predictions.json")
    pr_curves = property(lambda self: self.path / "eval" / "pr_curves.png")
    predictions = property(lambda self: self.path / "predictions")
    report = property(lambda self: self.path / "report.html")
    export = property(lambda self: self.path / "export")
    tracking = property(lambda self: self.path / "tracking.json")  # each tracker's run (engine/tracking.py)
    tensorboard = property(lambda self: self.path / "tb")  # --track tensorboard's event files
    wandb = property(lambda self: self.path / "wandb")  # --track wandb's run files (W&B's own layout)
    pretrained = property(lambda self: self.path / "pretrained.json")  # what --pretrained loaded
    lr_find_csv = property(lambda self: self.path / "lr_find.csv")
    lr_find_json = property(lambda self: self.path / "lr_find.json")
    lr_find_plot = property(lambda self: self.path / "lr_find.png")
    review = property(lambda self: self.path / "review")  # lanner review: label_issues.csv, review.json
    label_issues = property(lambda self: self.path / "review" / "label_issues.csv")
    lock = property(lambda self: self.path / "run.lock")  # the process training this run (engine/runlock.py)

    def checkpoint(self, which: str) -> Path:
        """``which`` is last or best."""
        return self.checkpoints / f"{which}.ckpt"

    def holds_run(self) -> bool:
        """Whether a run was saved here: a checkpoint file, not just checkpoints/ (a first save that
        failed, e.g. on a full disk, leaves the folder and nothing to resume)."""
        return self.checkpoint("last").exists() or self.checkpoint("best").exists()

    def find_checkpoint(self, which: str = "best") -> Path:
        """The ``which`` checkpoint, else the other one; a clear error when the run has none."""
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: no such run directory or checkpoint")
        for name in (which, "last", "best"):
            if self.checkpoint(name).exists():
                return self.checkpoint(name)
        raise CheckpointError(
            f"{self.path}: no checkpoints/ in this run (was it started with `lanner train`?)"
        )

    @classmethod
    def of_checkpoint(cls, checkpoint: Path) -> RunDir:
        """The run a checkpoint file belongs to (RUN/checkpoints/x.ckpt -> RUN); an exported folder
        is its own."""
        checkpoint = Path(checkpoint)
        return cls(checkpoint if checkpoint.is_dir() else checkpoint.parent.parent)


@dataclass
class CheckpointMeta:
    """What a checkpoint says about its model; the task's own keys live in ``details``."""

    task: str
    classes: list[str]
    model_name: str
    config: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # preprocessing / image_size, letterbox, tiling
    version: str = __version__

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint keys this metadata occupies (the 0.1.0 layout, so older lanners read it too)."""
        meta = {"task": self.task, "classes": list(self.classes), **self.details}
        return {
            "lanner_version": self.version,
            "meta": meta,
            "model_name": self.model_name,
            "config": self.config,
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], source: str = "checkpoint") -> CheckpointMeta:
        try:
            meta = ckpt["meta"]
            details = {k: v for k, v in meta.items() if k not in ("task", "classes")}
            return cls(
                task=meta["task"],
                classes=list(meta["classes"]),
                model_name=ckpt["model_name"],
                config=dict(ckpt.get("config") or {}),
                details=details,
                version=str(ckpt.get("lanner_version", "0.1.0")),
            )
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{source}: not a lanner checkpoint (missing {e})") from e

    def get(self, key: str, default: Any = None) -> Any:
        """A task-specific value (``image_size``, ``preprocessing``, ``tiling``, ...)."""
        return self.details.get(key, default)
