"""``--time`` without ``--image-size`` on a CPU: an input size the budget can afford enough epochs at.

A classifier from random weights learns more in a short budget from ten epochs at a lower
resolution than from five at the images' own: measured at 2 minutes (docs/benchmarks.md, "Input size
in a short budget"), sign-language digits 0.870 top-1 at 96 px (5 epochs) vs 0.984 at 64 px (11),
trashnet 0.678 at 112 px (5) vs 0.723 at 80 px (6). A step costs about the square of the side, so
the size that buys ``TARGET_EPOCHS`` is the full size times sqrt(affordable epochs / target). The
affordable epochs come from timing a few training steps of a copy of the model on random pixels, so
the rule follows the machine and the model, not a table.

The rule's two constants were tuned together, by the accuracy of the sizes they chose: measured since,
the training loop ran 0.97-1.15x the probe's step time at the full size on trashnet (DATA_FACTOR says
1.3), so the rule aims at ~12 real epochs. The epochs it prints for the smaller size count the fixed
part of a step (resizing.step_cost), which does not shrink with the side (a 2-minute trashnet run
told "~8 epochs at 48 px" by the side's square alone trained 5.9 there).
"""

from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from lanner.engine.budget import estimated_overhead, plan_steps
from lanner.engine.lr_auto import RANGE_TEST_STEPS
from lanner.tasks.classify.resizing import step_cost

TARGET_EPOCHS = 10  # fewer than this at full size: shrink the input until they fit
MIN_FRACTION = 0.5  # never below half the full side: small objects must stay visible
SIZE_STEP, MIN_SIZE = 16, 32  # any chosen input size is a multiple of SIZE_STEP, at least MIN_SIZE
# A timed step on random pixels leaves out loading and augmenting the batch: an allowance for them
# (the estimate only has to be right within a factor of ~1.5: the size moves with its square root).
DATA_FACTOR = 1.3
# The share of the budget left for training once the cache, the model and the final eval are made.
TRAINING_SHARE = 0.85
PROBE_STEPS = 2


def step_seconds(model: nn.Module, size: int, batch: int, device: torch.device) -> float:
    """The fastest of a few timed AdamW steps of a copy of ``model`` on a random batch (after one
    warm-up step); the model itself is not touched."""
    probe = copy.deepcopy(model).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-4)
    pixels = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    times = []
    for _ in range(PROBE_STEPS + 1):
        start = time.perf_counter()
        loss = F.cross_entropy(probe(pixels), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def affordable_epochs(
    budget_s: float, train_images: int, val_images: int, batch: int, step_s: float
) -> float:
    """Epochs (fractional) a budget buys at ``step_s`` per step, validation paid for each epoch."""
    steps_per_epoch = max(1, math.ceil(train_images / batch))
    step_s *= DATA_FACTOR
    plan = plan_steps(
        budget_s * TRAINING_SHARE, steps_per_epoch, step_s, estimated_overhead(step_s, batch, val_images)
    )
    return plan.steps / steps_per_epoch


def range_test_epochs(steps_per_epoch: int) -> float:
    """The epochs ``--lr auto``'s range test takes out of the budget before the first one (api.train
    runs it inside the budget): RANGE_TEST_STEPS training steps. Counted in steps, not seconds, because
    it runs at whatever input size is chosen, as the epochs do (an upper bound: validation is left out,
    and the test stops early when the loss diverges)."""
    return RANGE_TEST_STEPS / max(1, steps_per_epoch)


def size_for_budget(full: int, epochs_at_full: float) -> int:
    """The input size that buys about TARGET_EPOCHS, a multiple of SIZE_STEP, at least MIN_FRACTION
    of ``full``; ``full`` itself when that many epochs already fit."""
    if epochs_at_full >= TARGET_EPOCHS:
        return full
    wanted = full * math.sqrt(max(epochs_at_full, 1e-3) / TARGET_EPOCHS)
    floor = max(MIN_SIZE, math.ceil(full * MIN_FRACTION / SIZE_STEP) * SIZE_STEP)
    return min(full, max(floor, round(wanted / SIZE_STEP) * SIZE_STEP))


def budget_note(budget: str, full: int, size: int, epochs_at_full: float) -> str:
    if size == full:
        return ""
    more = epochs_at_full / step_cost(size, full)
    return (
        f"input size {size} px, not {full}: --time {budget} affords ~{epochs_at_full:.0f} epochs at "
        f"{full} px, ~{more:.0f} at {size} (below {TARGET_EPOCHS} epochs a lower resolution learns more "
        "per minute; --image-size sets it)"
    )
