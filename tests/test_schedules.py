import math

import pytest

from lanner.engine.schedules import SCHEDULES, ScheduleSpec, Segment, lr_at, lr_factor, schedule_table


def factors(spec, epochs=10, spe=10):
    total = epochs * spe
    return [lr_factor(spec, s, total, spe) for s in range(total + 1)]


def test_cosine_goes_from_base_to_min():
    f = factors(ScheduleSpec("cosine", min_lr_factor=0.1))
    assert f[0] == pytest.approx(1.0)
    assert f[50] == pytest.approx(0.55)
    assert f[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f, f[1:], strict=False))


def test_warmup_rises_linearly_then_decays():
    f = factors(ScheduleSpec("linear", warmup_epochs=2, warmup_start_factor=0.1))
    assert f[0] == pytest.approx(0.1)
    assert f[10] == pytest.approx(0.55)
    assert f[20] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.5)


def test_step_and_multistep_decay_at_epoch_boundaries():
    step = factors(ScheduleSpec("step", step_size=3, gamma=0.5))
    assert step[29] == 1.0 and step[30] == 0.5 and step[60] == 0.25
    multi = factors(ScheduleSpec("multistep", milestones=[2, 7]))
    assert multi[19] == 1.0 and multi[20] == pytest.approx(0.1) and multi[70] == pytest.approx(0.01)


def test_exponential_time_polynomial_constant():
    assert factors(ScheduleSpec("exponential", gamma=0.9))[30] == pytest.approx(0.9**3)
    assert factors(ScheduleSpec("time", gamma=0.5))[40] == pytest.approx(1 / 3)
    assert factors(ScheduleSpec("polynomial", power=2))[50] == pytest.approx(0.25)
    assert set(factors(ScheduleSpec("constant"))) == {1.0}


def test_onecycle_matches_torch():
    import torch

    spe, epochs = 7, 5
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=spe * epochs + 1, three_phase=False, anneal_strategy="cos"
    )
    ours = Segment(0, 0, 0, spe * epochs, spe, 0.1, ScheduleSpec("onecycle"))
    torch_lrs = []
    for _ in range(spe * epochs):
        torch_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours_lrs = [ours.lr_at(s) for s in range(spe * epochs)]
    peak_t, peak_o = (
        max(range(len(torch_lrs)), key=torch_lrs.__getitem__),
        max(range(len(ours_lrs)), key=ours_lrs.__getitem__),
    )
    assert abs(peak_t - peak_o) <= 1
    assert ours_lrs[0] == pytest.approx(torch_lrs[0], rel=1e-6)
    assert max(ours_lrs) == pytest.approx(0.1, rel=1e-2)
    assert ours.lr_at(spe * epochs) == pytest.approx(0.1 / 25 / 1e4) and ours_lrs[-1] < 1e-3


def test_unknown_schedule_suggests_closest():
    with pytest.raises(ValueError, match="did you mean 'cosine'"):
        ScheduleSpec("cosin")


def test_segments_switch_at_their_start_and_keep_origin():
    first = Segment(0, 0, 0, 100, 10, 1.0, ScheduleSpec("cosine"))
    second = Segment(1, 5, 50, 200, 10, 0.01, ScheduleSpec("constant"))
    assert lr_at([first, second], 49) == pytest.approx(first.lr_at(49))
    assert lr_at([first, second], 50) == 0.01
    kept = Segment(1, 5, 50, 100, 10, 1.0, ScheduleSpec("cosine"), origin_step=0)
    assert lr_at([first, kept], 70) == pytest.approx(first.lr_at(70))


def test_schedule_table_lists_every_epoch():
    rows = schedule_table([Segment(0, 0, 0, 30, 10, 0.5, ScheduleSpec("cosine"))], 3, 10)
    assert [r[0] for r in rows] == [1, 2, 3]
    assert rows[0][1] == 0.5 and rows[-1][2] < rows[0][2]
    assert all(math.isfinite(v) for r in rows for v in r[1:])


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_is_finite_and_positive(name):
    f = factors(ScheduleSpec(name, milestones=[3], min_lr_factor=0.01, warmup_epochs=1))
    assert all(math.isfinite(x) and x >= 0 for x in f)
