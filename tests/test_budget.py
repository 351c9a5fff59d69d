"""The --time plan (steps the budget buys, a partial last epoch), the CPU defaults chosen from the data,
and the recipe options (mixup, cutmix)."""

import math
import re
import time

import numpy as np
import torch
import yaml
from helpers import digit_images, write_digit_folders
from PIL import Image

from lanner import api
from lanner.config import make_config
from lanner.data.formats import read_dataset
from lanner.data.pixels import Preprocessing
from lanner.data.split import assign_validation_split
from lanner.engine.budget import (
    BudgetPlan,
    describe,
    plan_costed_steps,
    plan_steps,
    ready_to_plan,
    schedule_unfinished,
    validation_interval,
)
from lanner.engine.checkpoint import load_checkpoint
from lanner.engine.history import read_history
from lanner.tasks.base import SHORT_RUN_EPOCHS, TrainRecipe
from lanner.tasks.classify import resizing
from lanner.tasks.classify.budget_size import affordable_epochs, range_test_epochs, size_for_budget
from lanner.tasks.classify.setup import budget_epochs, default_input_size
from lanner.tasks.classify.training import ClassificationTask, mix_batch, random_erase


def test_the_budget_buys_whole_epochs_then_a_partial_one():
    # 10 steps per epoch at 1 s each, 5 s of validation per epoch, 100 s (98 usable):
    # 6 epochs cost 90 s; a 7th whole one would not fit, its first 3 steps + validation (8 s) do.
    plan = plan_steps(100, steps_per_epoch=10, step_s=1.0, overhead_s=5.0)
    assert plan == BudgetPlan(steps=63, epochs=7)
    assert describe(plan, 10) == "6 epochs and 30% of one more"
    assert describe(BudgetPlan(steps=13, epochs=2), 10) == "1 epoch and 30% of one more"


def test_a_budget_shorter_than_an_epoch_trains_part_of_one():
    plan = plan_steps(30, steps_per_epoch=100, step_s=1.0, overhead_s=4.0)
    assert plan == BudgetPlan(steps=25, epochs=1)
    assert describe(plan, 100).startswith("25% of one epoch")


def test_no_epoch_is_started_that_only_its_validation_would_fill():
    # After 2 whole epochs (2 x 15 s) 8 s remain of 38 usable: a third epoch's validation alone costs 10.
    plan = plan_steps(38 / 0.98, steps_per_epoch=5, step_s=1.0, overhead_s=10.0)
    assert plan == BudgetPlan(steps=10, epochs=2)
    assert plan_steps(1, steps_per_epoch=5, step_s=10.0, overhead_s=10.0) == BudgetPlan(1, 1)


def test_validation_that_would_eat_the_budget_runs_less_often():
    assert validation_interval(validation_s=5, train_s=60) == 1  # cheap: every epoch
    # Tiled validation of whole images: 60 s against 30 s of training -> every 6th epoch keeps it
    # at 60 / (6 * 30 + 60) = 25% of the time.
    assert validation_interval(validation_s=60, train_s=30) == 6
    assert 60 / (validation_interval(60, 30) * 30 + 60) <= 0.25


def test_small_images_train_at_their_own_resolution(tmp_path):
    small = read_dataset(str(write_digit_folders(tmp_path / "small", per_class=4)))  # 24 px digits
    assert default_input_size(128, small) == 32  # never below 32
    big = tmp_path / "big"
    for cls, side in (("a", 100), ("b", 90), ("c", 300)):
        (big / cls).mkdir(parents=True)
        Image.new("RGB", (side * 2, side)).save(big / cls / "x.jpg")
    assert default_input_size(128, read_dataset(str(big))) == 96  # median short side 100 -> 96
    photos = tmp_path / "photos"
    (photos / "a").mkdir(parents=True)
    (photos / "b").mkdir(parents=True)
    Image.new("RGB", (640, 480)).save(photos / "a" / "1.jpg")
    (photos / "b" / "broken.jpg").write_bytes(b"not an image")  # skipped here, reported by the cache
    assert default_input_size(128, read_dataset(str(photos))) == 128


def test_mixup_and_cutmix_targets_match_what_was_mixed(tmp_path):
    # Each image one constant value, its own class: what a pixel holds says whose it is.
    n, c = 6, 6
    x = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 16, 16).clone()
    y = torch.arange(n)
    mixed, soft = mix_batch(x.clone(), y, c, (0.4, 0.0), torch.Generator().manual_seed(1))
    assert torch.allclose(soft.sum(1), torch.ones(n))
    # mixup: every pixel is the targets' weighted mean of the two images' values
    assert torch.allclose(mixed[:, 0, 0, 0], soft @ torch.arange(1, c + 1, dtype=torch.float32))
    again, _ = mix_batch(x.clone(), y, c, (0.4, 0.0), torch.Generator().manual_seed(1))
    assert torch.equal(mixed, again)  # the batch's generator decides everything (resumable)
    cut, soft = mix_batch(x.clone(), y, c, (0.0, 1.0), torch.Generator().manual_seed(3))
    kept = (cut == x).float().mean(dim=(1, 2, 3))  # share of each image's own pixels left
    assert torch.allclose(soft[y, y], kept) and (kept < 1).any()


def test_random_erasing_replaces_one_rectangle_in_the_chosen_share_of_images():
    x = torch.full((400, 3, 32, 32), 5.0)  # 5: far from what N(0, 1) noise draws
    erased = random_erase(x.clone(), 0.5, torch.Generator().manual_seed(0))
    changed = erased != 5.0  # [B, 3, H, W]
    hit = changed.flatten(1).any(1)
    assert 0.4 < hit.float().mean() < 0.6  # about the share asked for
    for image in changed[hit]:
        rows, cols = image.any(0).any(1).nonzero(), image.any(0).any(0).nonzero()
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert image[0].sum() == h * w  # one solid rectangle (the same in every channel)
        assert 0.01 < h * w / 32**2 < 0.34
    again = random_erase(x.clone(), 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(erased, again)  # the batch's generator decides everything (resumable)
    assert torch.equal(random_erase(x.clone(), 0.0, torch.Generator().manual_seed(0)), x)


def test_training_with_mixup_cutmix_and_random_erasing(tmp_path):
    data = write_digit_folders(tmp_path / "digits", per_class=8)
    config = make_config(
        {"data": str(data), "run": str(tmp_path / "run"), "model": "test_resnet", "image_size": 16,
         "epochs": 1, "batch_size": 8, "mixup": 0.2, "cutmix": 1.0, "erase": 0.25,
         "cache_dir": str(tmp_path / "cache")}
    )  # fmt: skip
    run = api.train(config, evaluate_after=False)
    assert math.isfinite(float(read_history(run / "history.csv")[0]["train_loss"]))
    assert yaml.safe_load((run / "config.yaml").read_text())["erase"] == 0.25


def _task(augment: str) -> ClassificationTask:
    images = np.zeros((8, 18, 18, 3), dtype=np.uint8)
    return ClassificationTask(
        images=images, labels=np.array([0, 1] * 4), train_idx=np.arange(6), val_idx=np.arange(6, 8),
        classes=["a", "b"], prep=Preprocessing(16, (0.5,) * 3, (0.25,) * 3),
        recipe=TrainRecipe(batch_size=2, augment=augment),
    )  # fmt: skip


def test_augment_auto_is_light_for_a_short_run_and_default_for_a_longer_one():
    task = _task("auto")
    said = task.plan_epochs(3)
    assert task.augment == "light" and "augmentation: light" in said and "3 planned epochs" in said
    assert task.plan_epochs(4) is None  # the same preset: nothing more to say
    assert "augmentation: default" in task.plan_epochs(SHORT_RUN_EPOCHS) and task.augment == "default"
    chosen = _task("strong")  # a preset the user named is kept, whatever the length
    assert chosen.plan_epochs(3) is None and chosen.augment == "strong"


def _progressive_task(start: float) -> ClassificationTask:
    images = np.random.default_rng(0).integers(0, 255, (8, 70, 70, 3), dtype=np.uint8)
    return ClassificationTask(
        images=images, labels=np.array([0, 1] * 4), train_idx=np.arange(6), val_idx=np.arange(6, 8),
        classes=["a", "b"], prep=Preprocessing(64, (0.5,) * 3, (0.25,) * 3),
        recipe=TrainRecipe(batch_size=3, augment="light", progressive=start),
    )  # fmt: skip


def test_progressive_resizing_grows_the_batches_to_full_size_for_the_last_quarter():
    task = _progressive_task(0.5)
    said = task.plan_epochs(8)
    assert "progressive resizing: 32 px growing to 64 px" in said and "last 2 of 8 epochs" in said
    sides = [next(task.train_batches(epoch))[0].shape[-1] for epoch in range(8)]
    assert sides[0] == 32 and sides[-2:] == [64, 64]
    assert all(a <= b for a, b in zip(sides, sides[1:], strict=False)) and len(set(sides)) > 3
    assert all(side % 8 == 0 for side in sides)
    # a step costs less while the inputs are small: what a --time plan divides its budget by
    costs = [task.step_cost(epoch, 8) for epoch in range(8)]
    assert costs[0] < 0.5 and costs[-1] == 1.0 and sorted(costs) == costs
    assert task.plan_epochs(9) is None  # still on: said once
    assert "off in a run of 3 epoch(s)" in task.plan_epochs(3)  # too short to grow: full size
    assert next(task.train_batches(0))[0].shape[-1] == 64 and task.step_cost(0, 3) == 1.0
    off = _progressive_task(0.0)
    assert off.plan_epochs(8) is None and next(off.train_batches(0))[0].shape[-1] == 64


def test_a_time_budget_buys_more_epochs_when_inputs_start_small():
    def growing(epoch, epochs):  # the schedule's own costs, inputs from half the size
        return resizing.step_cost(resizing.epoch_size(64, 0.5, epoch, epochs), 64)

    flat, flat_step = plan_costed_steps(600, 10, 1.0, 5.0, 0, 1, lambda e, n: 1.0)
    assert flat == plan_steps(600, 10, 1.0, 5.0) and flat_step == 1.0
    grown, mean_step = plan_costed_steps(600, 10, 1.0, 5.0, 0, 1, growing)
    assert grown.epochs > flat.epochs
    # settled: the plan's own epochs give the mean step time it was made with, and it fits the budget
    cost = sum(growing(e, grown.epochs) for e in range(grown.epochs)) / grown.epochs
    assert mean_step == cost and grown.steps * mean_step + grown.epochs * 5.0 <= 600
    later, _ = plan_costed_steps(300, 10, 1.0, 5.0, 4, grown.epochs, growing)  # from epoch 4 on
    assert later.epochs >= 1


def test_a_timed_run_with_progressive_resizing_says_its_sizes(tmp_path, capsys):
    data = write_digit_folders(tmp_path / "digits", per_class=8)
    config = make_config(
        {"data": str(data), "run": str(tmp_path / "run"), "model": "test_resnet", "image_size": 32,
         "time": "8s", "batch_size": 8, "progressive": 0.5, "cache_dir": str(tmp_path / "cache")}
    )  # fmt: skip
    start = time.perf_counter()
    run = api.train(config, evaluate_after=False)
    took = time.perf_counter() - start
    rows = read_history(run / "history.csv")
    said = capsys.readouterr().out
    assert rows and "progressive resizing: " in said  # on, or off when the budget buys under 4 epochs
    # Each tiny epoch writes plots and checkpoints (~0.5 s): when --time left them out, this 8 s budget
    # planned ~90 epochs and took about a minute. Wide margin: set-up and a loaded CI machine.
    assert took < 30, f"an 8 s budget took {took:.0f} s"


def test_a_short_budget_buys_its_epochs_at_a_lower_input_size():
    # 5 affordable epochs at 96 px want ~10 at 96 * sqrt(1/2) = 68 -> 64; never below half the side
    assert size_for_budget(96, 5.0) == 64
    assert size_for_budget(112, 5.0) == 80
    assert size_for_budget(96, 0.1) == 48
    assert size_for_budget(96, 12.0) == 96  # enough epochs: the full size stays
    # the estimate is the budget planner's, with validation paid: 10 steps/epoch at 0.1 s (x1.3 for data)
    epochs = affordable_epochs(100, train_images=320, val_images=80, batch=32, step_s=0.1)
    # 85 s less 2% spare / (1.3 s of steps + 0.60 s of validation and fixed cost per epoch) = 43.9
    assert 43 < epochs < 44


def test_the_input_size_rule_leaves_lr_autos_range_test_out_of_the_training_time(tmp_path):
    # --lr auto runs a 100-step range test inside the budget before the first epoch (api.train), so
    # the size chosen for the budget must count on the epochs left, not on the whole budget.
    write_digit_folders(tmp_path / "digits", labels=(0, 1), per_class=40)
    dataset = read_dataset(tmp_path / "digits")
    assign_validation_split(dataset, 0.2, seed=0)  # 64 train, 16 val images: 8 steps of batch 8
    plain = make_config({"data": str(tmp_path / "digits"), "time": "60s"})
    auto = plain.model_copy(update={"lr": "auto"})
    assert range_test_epochs(steps_per_epoch=8) == 12.5  # 100 steps
    whole = budget_epochs(plain, dataset, batch=8, step_s=0.125)
    assert whole == affordable_epochs(60, train_images=64, val_images=16, batch=8, step_s=0.125)
    assert budget_epochs(auto, dataset, batch=8, step_s=0.125) == whole - 12.5
    assert budget_epochs(auto, dataset, batch=8, step_s=1.0) == 0  # the range test outlasts the budget


def test_a_timed_run_chooses_and_keeps_a_smaller_input_size(tmp_path, capsys):
    data = tmp_path / "digits"
    for label in (0, 1, 7):  # real digits at 96 px, so the default input size is 96
        (data / str(label)).mkdir(parents=True)
        for i, image in enumerate(digit_images(label, 24, size=96)):
            image.save(data / str(label) / f"{i}.png")
    config = make_config(
        {"data": str(data), "run": str(tmp_path / "run"), "time": "3s", "batch_size": 8,
         "cache_dir": str(tmp_path / "cache")}
    )  # fmt: skip
    run = api.train(config, evaluate_after=False)
    said = capsys.readouterr().out
    kept = yaml.safe_load((run / "config.yaml").read_text())["image_size"]
    assert f"input size {kept} px, not 96: --time 3s affords" in said
    assert 48 <= kept < 96  # a resume reads config.yaml: it cannot measure its way to another size
    assert read_history(run / "history.csv")


def test_a_budget_is_planned_after_a_fifth_of_an_epoch_or_sooner_when_the_epoch_is_long():
    assert not ready_to_plan(10, 100, budget_share_spent=False)  # a fifth of 100 steps is 20
    assert ready_to_plan(20, 100, budget_share_spent=False)
    # an epoch of 3000 tiles against a short budget: 5% of it spent after 4 steps, plan now
    assert ready_to_plan(4, 3000, budget_share_spent=True)
    assert not ready_to_plan(2, 3000, budget_share_spent=True)  # never on fewer than 3 steps
    assert ready_to_plan(2, 2, budget_share_spent=False)  # a 2-step epoch is measured whole


def test_a_run_cut_short_is_worth_a_warning_only_when_its_lr_had_not_decayed():
    # The clock taking the last 4 of 380 steps of a cosine (LR 4e-7 of 1e-3) finished the schedule in
    # all but name; stopping a third before its end (LR a quarter of base) did not. A constant LR
    # has no end to miss.
    assert not schedule_unfinished(4.3e-7, 0.0, 1e-3)
    assert schedule_unfinished(2.5e-4, 0.0, 1e-3)
    assert not schedule_unfinished(1e-3, 1e-3, 1e-3)


def test_an_epoch_slower_than_planned_ends_the_run_at_an_epoch_and_says_so(tmp_path, capsys, monkeypatch):
    # The curves of epoch 2 take as long to write as the whole budget (a stalled network disk): the plan
    # made from epoch 1 (2+ epochs even on a loaded machine) no longer fits. The run ends at epoch 2
    # instead of overrunning --time, and says where its LR stood (not decayed: its end did not come).
    from lanner.engine import trainer

    data = tmp_path / "digits"
    write_digit_folders(data, per_class=12)
    written = []

    def slow_second_plot(*args, **kwargs):
        written.append(1)
        if len(written) == 2:
            time.sleep(12)
        return plot_curves(*args, **kwargs)

    plot_curves = trainer.plot_curves
    monkeypatch.setattr(trainer, "plot_curves", slow_second_plot)
    config = make_config(
        {"data": str(data), "run": str(tmp_path / "run"), "model": "test_resnet", "image_size": 16,
         "time": "12s", "batch_size": 4, "cache_dir": str(tmp_path / "cache")}
    )  # fmt: skip
    run = api.train(config, evaluate_after=False)
    said = " ".join(capsys.readouterr().out.split())
    rows = read_history(run / "history.csv")
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["train_state"]
    assert len(rows) == 2 and state["total_epochs"] == 2  # not a third epoch the clock cuts at once
    assert f"slower than planned (a busy machine?): the run ends at epoch 2, step {state['step']} of" in said
    assert f"with the LR at {float(rows[-1]['lr']):.3g}, not decayed" in said


def test_a_plan_inside_one_epoch_is_remade_as_the_steps_speed_up(tmp_path, capsys, monkeypatch):
    # An epoch longer than the budget (tiles) ends no epoch to re-plan at. Here the first steps are
    # slow (0.4 s, as a tiled run's first steps are) and the rest fast (0.05 s): the plan made after the
    # first steps is re-made as the steps done double, so the run trains more steps than first planned,
    # its LR schedule still ends at its last step, and the budget holds.
    data = tmp_path / "digits"
    write_digit_folders(data, per_class=100)  # 285 training images: 143 steps of 2, far beyond 8 s
    slow_steps = []
    training_step = ClassificationTask.training_step

    def first_steps_slow(self, model, batch):
        slow_steps.append(1)
        time.sleep(0.4 if len(slow_steps) <= 3 else 0.05)
        return training_step(self, model, batch)

    monkeypatch.setattr(ClassificationTask, "training_step", first_steps_slow)
    config = make_config(
        {"data": str(data), "run": str(tmp_path / "run"), "model": "test_resnet", "image_size": 16,
         "time": "8s", "batch_size": 2, "val_fraction": 0.05, "eval_train": 0,
         "cache_dir": str(tmp_path / "cache")}
    )  # fmt: skip
    run = api.train(config, evaluate_after=False)
    said = " ".join(capsys.readouterr().out.split())
    planned = [int(n) for n in re.findall(r"LR schedule laid out over (\d+) steps", said)]
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["train_state"]
    rows = read_history(run / "history.csv")
    assert len(rows) == 1 and float(rows[0]["epoch_fraction"]) < 1  # one partial epoch
    assert len(planned) >= 2 and planned[-1] > planned[0]  # re-made, for more steps than first planned
    assert state["step"] == planned[-1] == state["segments"][0]["end_step"]  # its schedule ran whole
    assert state["wall_seconds"] <= 8.0 * 1.05
