"""The --time plan (steps the budget buys, a partial last epoch) and the CPU defaults chosen from the data."""

from PIL import Image

from lanner.data.formats import read_dataset
from lanner.engine.budget import BudgetPlan, describe, plan_steps, validation_interval
from lanner.tasks.classify.setup import default_input_size
from tests.helpers import write_digit_folders


def test_the_budget_buys_whole_epochs_then_a_partial_one():
    # 10 steps per epoch at 1 s each, 5 s of validation per epoch, 100 s (98 usable):
    # 6 epochs cost 90 s; a 7th whole one would not fit, its first 3 steps + validation (8 s) do.
    plan = plan_steps(100, steps_per_epoch=10, step_s=1.0, overhead_s=5.0)
    assert plan == BudgetPlan(steps=63, epochs=7)
    assert describe(plan, 10) == "6 epochs and 30% of one more"


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
