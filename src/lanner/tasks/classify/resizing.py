"""Progressive resizing (``--progressive START``): early epochs train on smaller inputs, which cost less
per step, so a budget buys more epochs; the last quarter of the run trains at the full size, so the
model ends at the resolution it is evaluated and exported at (fast.ai's DAWNBench recipe, FFCV's
ResNet schedules). Networks with global pooling take any input size, so only the crop's output size
changes: the same random resized crop is drawn either way.

Sizes follow the run's planned epochs, which the trainer tells the task (and a ``--time`` plan may
change); the trainer asks :func:`step_cost` to plan a budget whose steps get dearer as sizes grow.
"""

from __future__ import annotations

FULL_SIZE_SHARE = 0.25  # the run's last quarter of epochs (at least one) trains at the full size
MIN_EPOCHS = 4  # shorter runs train at the full size throughout: there is no room to grow
SIZE_MULTIPLE = 8  # sizes a convolution's strides divide without remainders
MIN_SIZE = 32
# The share of a CPU training step that does not shrink with the input (optimizer, batch assembly,
# the head); the rest scales with the pixels. Measured on resnet10t, batch 32, 2 threads: 64 px
# steps ran 1.6x faster than 96 px ones, 80 px 1.7x faster than 112 px.
FIXED_STEP_COST = 0.25


def epoch_size(full: int, start: float, epoch: int, epochs: int) -> int:
    """The training input size of ``epoch`` (0-based) in a run of ``epochs``: ``start`` x ``full`` at
    first, growing linearly, ``full`` for the last quarter; ``full`` throughout when ``start`` is 0."""
    if start <= 0 or epochs < MIN_EPOCHS:
        return full
    growing = epochs - max(1, round(epochs * FULL_SIZE_SHARE))
    if epoch >= growing:
        return full
    fraction = start + (1 - start) * epoch / growing
    return min(full, max(MIN_SIZE, round(full * fraction / SIZE_MULTIPLE) * SIZE_MULTIPLE))


def step_cost(size: int, full: int) -> float:
    """A training step's time at ``size`` as a fraction of one at ``full``."""
    return FIXED_STEP_COST + (1 - FIXED_STEP_COST) * (size / full) ** 2


def describe(full: int, start: float, epochs: int) -> str | None:
    """The line that says what the schedule does in a run of ``epochs`` (None when it is off)."""
    if start <= 0:
        return None
    if epochs < MIN_EPOCHS:
        return f"progressive resizing: off in a run of {epochs} epoch(s) (it needs {MIN_EPOCHS}): {full} px"
    growing = epochs - max(1, round(epochs * FULL_SIZE_SHARE))
    first = epoch_size(full, start, 0, epochs)
    last = epochs - growing
    growth = f"{first} px growing to {full} px"
    return f"progressive resizing: {growth} ({full} for the last {last} of {epochs} epochs)"
