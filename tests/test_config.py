import pytest

from lanner.config import TrainConfig, apply_overrides, load_config, make_config, parse_duration
from lanner.errors import ConfigError


def test_yaml_round_trip(tmp_path):
    cfg = make_config({"data": "x", "lr": 0.01, "schedule": {"name": "step", "gamma": 0.5}, "epochs": 3})
    path = tmp_path / "run.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(path)
    assert again == cfg and again.schedule.gamma == 0.5


def test_unknown_key_suggests_the_closest(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: x\nlearning_rat: 0.1\nepochs: 2\nbatchsize: 4\n")
    with pytest.raises(ConfigError, match="batchsize.*did you mean 'batch_size'"):
        load_config(path)
    with pytest.raises(ConfigError, match="did you mean 'schedule.gamma'"):
        apply_overrides({}, ["schedule.gama=0.5"])


def test_a_nested_key_written_flat_is_shown_how_to_nest(tmp_path):
    # the closest known key to "schedule.warmup_epochs" is itself: suggesting it would say nothing
    path = tmp_path / "flat.yaml"
    path.write_text("data: x\nschedule.warmup_epochs: 2\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == (
        f"{path}: 'schedule.warmup_epochs' is a nested key: write it as schedule: {{warmup_epochs: ...}} "
        "(on the command line: --set schedule.warmup_epochs=...)"
    )


def test_dotted_overrides_parse_values():
    values = apply_overrides(
        {"schedule": {"name": "cosine"}}, ["schedule.warmup_epochs=2", "lr=3e-4", "hflip=false"]
    )
    cfg = TrainConfig(**values)
    assert (
        cfg.schedule.warmup_epochs == 2
        and cfg.lr == 3e-4
        and cfg.hflip is False
        and cfg.schedule.name == "cosine"
    )


def test_bad_schedule_name_and_duration():
    with pytest.raises(ConfigError, match="did you mean 'onecycle'"):
        make_config({"schedule": "onecycel"})
    assert parse_duration("1h30m") == 5400 and parse_duration("15m") == 900 and parse_duration("90s") == 90
    with pytest.raises(ConfigError):
        make_config({"time": "soon"})
