"""Learning-rate schedules as pure functions of the optimizer step, so they can be drawn before a run.

Why not torch's ``lr_scheduler`` classes: their state is a counter that must be replayed, they
cannot be previewed without an optimizer, and changing the LR or the number of epochs mid-run
(``lanner resume --lr``) means hacking their internals. Here a run is a list of *segments*; each
segment lays one schedule over a range of steps, and the LR at any step is a pure function of the
segment that contains it. Resuming without changes keeps the segment, so the LR curve is exactly
that of an uninterrupted run.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

from lanner.config import SCHEDULES as SCHEDULES
from lanner.config import ScheduleSpec

# The spec is part of the run config (a lower layer); re-exported here for the engine's users.
from lanner.engine.plots import plt, save_figure

DEFAULT_GAMMA = {"step": 0.1, "multistep": 0.1, "exponential": 0.9, "time": 0.5}


def _gamma(spec: ScheduleSpec) -> float:
    return spec.gamma if spec.gamma is not None else DEFAULT_GAMMA.get(spec.name, 0.1)


def _decay_factor(spec: ScheduleSpec, epoch: float, progress: float) -> float:
    """Factor of the base LR after warmup; ``epoch`` counts from the segment start, progress in [0, 1]."""
    lo = spec.min_lr_factor
    name = spec.name
    if name == "constant":
        return 1.0
    if name == "step":
        return _gamma(spec) ** math.floor(epoch / spec.step_size + 1e-9)
    if name == "multistep":
        return _gamma(spec) ** sum(1 for m in spec.milestones if epoch + 1e-9 >= m)
    if name == "exponential":
        return _gamma(spec) ** epoch
    if name == "time":
        return 1.0 / (1.0 + _gamma(spec) * epoch)
    if name == "linear":
        return lo + (1.0 - lo) * (1.0 - progress)
    if name == "polynomial":
        return lo + (1.0 - lo) * (1.0 - progress) ** spec.power
    if name == "cosine":
        return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise AssertionError(name)


def _onecycle_factor(spec: ScheduleSpec, progress: float) -> float:
    # Same shape as torch.optim.lr_scheduler.OneCycleLR with cosine annealing.
    start = 1.0 / spec.div_factor
    end = start / spec.final_div_factor
    if progress < spec.pct_start:
        t = progress / max(spec.pct_start, 1e-12)
        return start + (1.0 - start) * 0.5 * (1.0 - math.cos(math.pi * t))
    t = (progress - spec.pct_start) / max(1.0 - spec.pct_start, 1e-12)
    return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def lr_factor(spec: ScheduleSpec, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Multiplier of the base LR at ``step`` (0-based) of a schedule laid over ``total_steps``."""
    total_steps = max(total_steps, 1)
    step = min(max(step, 0), total_steps)
    if spec.name == "onecycle":
        return _onecycle_factor(spec, step / total_steps)
    warmup_steps = round(spec.warmup_epochs * steps_per_epoch)
    if step < warmup_steps:
        w = spec.warmup_start_factor
        return w + (1.0 - w) * step / warmup_steps
    after = step - warmup_steps
    progress = after / max(total_steps - warmup_steps, 1)
    return _decay_factor(spec, after / max(steps_per_epoch, 1), progress)


@dataclass
class Segment:
    """One stretch of a run with one schedule: the first start, then one per resume that changed things."""

    index: int
    start_epoch: int
    start_step: int  # first optimizer step of this segment
    end_step: int  # the schedule is laid out up to this step (the planned end of training)
    steps_per_epoch: int
    base_lr: float
    schedule: ScheduleSpec
    reason: str = "start"
    changes: dict = field(default_factory=dict)
    time: str = ""
    origin_step: int | None = None  # where the schedule is laid from; start_step unless LR was kept

    def lr_at(self, step: int) -> float:
        origin = self.start_step if self.origin_step is None else self.origin_step
        local = step - origin
        total = self.end_step - origin
        return self.base_lr * lr_factor(self.schedule, local, total, self.steps_per_epoch)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["schedule"] = self.schedule.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Segment:
        d = dict(d)
        d["schedule"] = ScheduleSpec(**d["schedule"])
        return cls(**d)


def next_segment(prev: Segment, epoch: int, step: int, reason: str, changes: dict, time: str) -> Segment:
    """A segment starting at ``step`` that goes on with ``prev``'s schedule (the LR curve is unchanged)."""
    seg = copy.deepcopy(prev)
    seg.index, seg.start_epoch, seg.start_step = prev.index + 1, epoch, step
    seg.reason, seg.changes, seg.time = reason, changes, time
    seg.origin_step = prev.start_step if prev.origin_step is None else prev.origin_step
    return seg


def lr_at(segments: list[Segment], step: int) -> float:
    """LR at a global optimizer step, from the last segment that started at or before it."""
    current = segments[0]
    for seg in segments:
        if seg.start_step <= step:
            current = seg
    return current.lr_at(step)


def lr_curve(segments: list[Segment], total_steps: int) -> list[float]:
    return [lr_at(segments, s) for s in range(total_steps)]


def plot_schedule(segments: list[Segment], total_steps: int, steps_per_epoch: int, path) -> None:
    """Write the LR curve (x in epochs) with segment starts marked."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    xs = [s / steps_per_epoch for s in range(total_steps)]
    ax.plot(xs, lr_curve(segments, total_steps), color="#1f6feb")
    for seg in segments[1:]:
        ax.axvline(seg.start_step / steps_per_epoch, color="#d1242f", ls="--", lw=1)
        ax.annotate(
            f"{seg.reason} {seg.index}",
            (seg.start_step / steps_per_epoch, ax.get_ylim()[1]),
            fontsize=8,
            color="#d1242f",
            va="top",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(f"LR schedule: {segments[-1].schedule.name}")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def schedule_table(
    segments: list[Segment], epochs: int, steps_per_epoch: int
) -> list[tuple[int, float, float]]:
    """(epoch, LR at its first step, LR at its last step) for printing before a run."""
    rows = []
    for e in range(epochs):
        first, last = e * steps_per_epoch, (e + 1) * steps_per_epoch - 1
        rows.append((e + 1, lr_at(segments, first), lr_at(segments, last)))
    return rows
