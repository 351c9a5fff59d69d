"""A wall-clock budget (``--time``) turned into a number of optimizer steps, used whole.

The plan is made from measured speeds: a step's time from the first steps of the run, an epoch's
overhead (validation, checkpoint, curves) estimated until the first epoch measures it. The budget
buys as many steps as fit once every epoch's validation is paid for; when the last epoch does not
fit whole it is cut short (a partial epoch, recorded as such) instead of leaving the time unused,
and a run whose budget is shorter than one epoch trains on a seeded random part of it. The LR
schedule is laid over exactly the planned steps, so it ends where the budget does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

# Until the first validation is timed: evaluating an image costs about 0.3 of training on it, plus a
# fixed cost for checkpoints and plots. Measured on CPU: 0.26 for trashnet's 758 scored images an epoch
# (resnet10t); 0.26 and 0.31 in two tiled runs (576 and 640 tiles of 3000 px canvases, fcos_resnet18,
# decoding and merging included). An estimate too high leaves budget unused, too low overruns it.
EVAL_COST_PER_TRAIN_IMAGE = 0.30
FIXED_EPOCH_OVERHEAD_S = 0.5
# The plan keeps this share of the budget spare for what it cannot foresee (the final checkpoint).
SAFETY = 0.02
# Within a budget, validation may take at most this share of the time; beyond, it runs less often.
VALIDATION_SHARE = 0.25
# The plan is made after a fifth of the first epoch, or after this share of the budget if sooner (and
# at least 3 steps): an epoch of tiles can be longer than the budget, and a plan made at its end is none.
PROBE_SHARE = 0.05
# Fewer optimizer steps than this rarely teach a network much from random weights: said up front.
FEW_STEPS = 200
# A run the clock cuts short with its LR within this share of the base LR of its schedule's end value
# has all but finished the schedule (a few steps of a decayed cosine): not worth a warning.
UNFINISHED_LR_SHARE = 0.05


@dataclass(frozen=True)
class BudgetPlan:
    steps: int  # optimizer steps the budget buys from the plan's start
    epochs: int  # epochs they span (the last one possibly partial)


def estimated_overhead(step_s: float, batch_size: int, val_images: int) -> float:
    """Seconds an epoch spends outside training steps, before the first epoch has measured it."""
    per_image = step_s / max(batch_size, 1)
    return val_images * per_image * EVAL_COST_PER_TRAIN_IMAGE + FIXED_EPOCH_OVERHEAD_S


def ready_to_plan(steps_done: int, steps_per_epoch: int, budget_share_spent: bool) -> bool:
    """Whether the first steps of a --time run have measured enough to plan it: a fifth of the first
    epoch, or at least 3 steps once they have taken PROBE_SHARE of the budget (``budget_share_spent``)."""
    probe = min(max(3, steps_per_epoch // 5), steps_per_epoch)
    return steps_done >= probe or (steps_done >= 3 and budget_share_spent)


def plan_steps(budget_s: float, steps_per_epoch: int, step_s: float, overhead_s: float) -> BudgetPlan:
    """The most steps that fit ``budget_s`` when each step costs ``step_s`` and each epoch (a partial
    last one too) ``overhead_s`` more. At least one step, one epoch."""
    usable = budget_s * (1 - SAFETY)
    best = BudgetPlan(1, 1)
    for epochs in range(1, 100_000):
        affordable = math.floor((usable - epochs * overhead_s) / max(step_s, 1e-9))
        if affordable <= (epochs - 1) * steps_per_epoch:
            break  # another epoch's validation would eat more than its steps
        best = BudgetPlan(min(affordable, epochs * steps_per_epoch), epochs)
        if affordable < epochs * steps_per_epoch:
            break  # this epoch is the partial last one
    return best


def fits_another_epoch(budget_s: float, step_s: float, overhead_s: float) -> bool:
    """Whether what is left of a budget holds one more step and its epoch's end (validation, outputs)."""
    return budget_s * (1 - SAFETY) - overhead_s >= step_s


def plan_costed_steps(
    budget_s: float, steps_per_epoch: int, full_step_s: float, overhead_s: float, first: int, guess: int,
    step_cost: Callable[[int, int], float],
) -> tuple[BudgetPlan, float]:  # fmt: skip
    """:func:`plan_steps` from epoch ``first`` on when a step in epoch e of a run of E epochs costs
    ``step_cost(e, E)`` x ``full_step_s`` (inputs that grow during the run); returns the plan and its
    mean step time. The epochs bought and the steps' costs depend on each other: starting from
    ``guess`` epochs, a few rounds settle them."""
    epochs = max(guess, first + 1)
    for _ in range(5):
        cost = sum(step_cost(e, epochs) for e in range(first, epochs)) / (epochs - first)
        plan = plan_steps(budget_s, steps_per_epoch, full_step_s * cost, overhead_s)
        if first + plan.epochs == epochs:
            break
        epochs = first + plan.epochs
    return plan, full_step_s * cost


def schedule_unfinished(lr_reached: float, lr_at_end: float, base_lr: float) -> bool:
    """Whether a run that ends at ``lr_reached`` stopped materially short of its schedule's end."""
    return abs(lr_reached - lr_at_end) > UNFINISHED_LR_SHARE * base_lr


def describe(plan: BudgetPlan, steps_per_epoch: int) -> str:
    whole, rest = divmod(plan.steps, steps_per_epoch)
    epochs = f"{whole} epoch" if whole == 1 else f"{whole} epochs"
    if rest == 0:
        return epochs
    fraction = rest / steps_per_epoch
    if whole == 0:
        return f"{fraction:.0%} of one epoch (a seeded random part of the training images)"
    return f"{epochs} and {fraction:.0%} of one more"


def too_few_steps(steps: int) -> str:
    return (
        f"only {steps} optimizer steps fit this budget, too few to learn much from random weights; "
        "what helps: more --time, a cheaper --model, a smaller --image-size (or --tile), "
        "or starting from --pretrained weights"
    )


def validation_interval(validation_s: float, train_s: float, share: float = VALIDATION_SHARE) -> int:
    """Validate every k-th epoch, the smallest k that keeps validation within ``share`` of the time
    (tiled validation on whole aerial images can cost more than the training epoch itself)."""
    if validation_s <= share * (train_s + validation_s) or train_s <= 0:
        return 1
    return math.ceil(validation_s * (1 - share) / (share * train_s))
