"""Freezing over a run's life: ``--freeze backbone:N`` ends in a recorded segment, a resume restores
the frozen (or unfrozen) state of the epoch it starts at, ``lanner resume RUN --unfreeze``."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import write_digit_folders
from typer.testing import CliRunner

from lanner import api, cli
from lanner.config import make_config
from lanner.engine.checkpoint import load_checkpoint
from lanner.errors import ConfigError

HEAD = "fc."  # test_resnet's classifier; everything else is its backbone


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digit_folders(tmp_path_factory.mktemp("data") / "d", per_class=8)


def _train(tmp_path, data, run, **kw):
    base = {"data": str(data), "run": str(tmp_path / run), "model": "test_resnet", "image_size": 16}
    base |= {"batch_size": 8, "cache_dir": str(tmp_path / "cache"), "hflip": False}
    base |= {"lr": 0.01, "schedule": "constant"}  # resumes go on at the same LR
    return api.train(make_config(base | kw), evaluate_after=False)


def _state(run) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]


def _backbone_same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if not k.startswith(HEAD))


def _segments(run) -> list[dict]:
    return json.loads((run / "segments.json").read_text())


def test_freeze_for_n_epochs_is_a_segment_and_a_resume_restores_the_state_of_its_epoch(
    tmp_path, digits, capsys
):
    run = _train(tmp_path, digits, "n", freeze="backbone:2", epochs=1)
    start = _state(run)
    # Resumed before epoch 2 is over: still frozen (the head alone trains).
    api.resume(run, evaluate_after=False, epochs=2)
    second = _state(run)
    assert _backbone_same(start, second) and not torch.equal(start["fc.weight"], second["fc.weight"])
    assert [s["reason"] for s in _segments(run)] == ["start", "resume"]
    # Epoch 3: unfrozen, recorded as a segment, the backbone trains.
    api.resume(run, evaluate_after=False, epochs=3)
    assert not _backbone_same(second, _state(run))
    segments = _segments(run)
    assert [s["reason"] for s in segments] == ["start", "resume", "resume", "unfreeze"]
    assert segments[-1]["start_epoch"] == 2 and segments[-1]["changes"] == {"freeze": ["backbone:2", None]}
    out = "".join(capsys.readouterr().out.split())
    assert "epoch3:backboneunfrozen,trainingalllayers(segment3)" in out
    history = load_checkpoint(run / "checkpoints" / "last.ckpt")["train_state"]["history"]
    assert [row["segment"] for row in history] == [0, 1, 3]
    # Resumed after the unfreeze: not frozen again, and the unfreeze is not recorded twice.
    third = _state(run)
    api.resume(run, evaluate_after=False, epochs=4)
    assert not _backbone_same(third, _state(run))
    assert [s["reason"] for s in _segments(run)].count("unfreeze") == 1
    assert "sinceepoch3:backboneunfrozen" in "".join(capsys.readouterr().out.split())


def test_resume_unfreeze_is_a_new_segment_that_trains_everything(tmp_path, digits):
    run = _train(tmp_path, digits, "frozen", freeze="backbone", epochs=1)
    frozen = _state(run)
    result = CliRunner().invoke(cli.app, ["resume", str(run), "--unfreeze", "--epochs", "2", "--no-eval"])
    assert result.exit_code == 0, result.output
    assert "changes: epochs 1 -> 2, freeze backbone -> none" in " ".join(result.output.split())
    assert not _backbone_same(frozen, _state(run))
    last = _segments(run)[-1]
    assert last["reason"] == "resume" and last["changes"] == {"epochs": [1, 2], "freeze": ["backbone", None]}
    assert make_config(load_checkpoint(run / "checkpoints" / "last.ckpt")["config"]).freeze is None
    with pytest.raises(ConfigError, match="trained with nothing frozen"):  # nothing left to unfreeze
        api.resume(run, evaluate_after=False, unfreeze=True, epochs=3)
