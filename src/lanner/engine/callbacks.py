"""The trainer's callback protocol: what a run tells the things that watch it (trackers, ...).

Callbacks run on process 0 only. The order of calls in one run: ``on_start`` once (a new run, or a
resume with its segment's changes), ``on_epoch_end`` after every epoch's validation with the row
written to history.csv, ``on_stop`` once with FINISHED (after the final evaluation), KILLED
(Ctrl-C/SIGTERM, after the resumable checkpoint) or FAILED. Every method is optional.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunStart:
    """What ``on_start`` is told: the run's config, tags (version, device, ...) and, on a resume,
    the index of the new segment and what it changed."""

    config: dict
    tags: dict = field(default_factory=dict)
    segment: int = 0
    changes: dict = field(default_factory=dict)

    @property
    def resumed(self) -> bool:
        return self.segment > 0


class Callback:
    def on_start(self, start: RunStart) -> None:
        """Before the first step of this process's training (a new run or a resume)."""

    def on_epoch_end(self, row: dict) -> None:
        """After each epoch: ``row`` is its history.csv row (epoch, lr, losses, metrics, speed)."""

    def on_stop(self, status: str) -> None:
        """Once at the end: FINISHED, KILLED or FAILED."""


class Callbacks(Callback):
    """Several callbacks called in order, as one."""

    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_start(self, start: RunStart) -> None:
        for c in self.callbacks:
            c.on_start(start)

    def on_epoch_end(self, row: dict) -> None:
        for c in self.callbacks:
            c.on_epoch_end(row)

    def on_stop(self, status: str) -> None:
        for c in self.callbacks:
            c.on_stop(status)
