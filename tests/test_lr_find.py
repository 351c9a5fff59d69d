"""LR range test: the smoothing, the suggestion, divergence on a real model, and the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import write_digit_folders

from lanner.engine.lr_find import cycle_epochs, exponential_lrs, range_test, smooth, suggest
from lanner.errors import ConfigError


def test_smoothing_is_a_bias_corrected_moving_average():
    assert smooth([3.0, 3.0, 3.0], beta=0.9) == pytest.approx([3.0, 3.0, 3.0])
    # beta 0.5: averages 0 then 1, divided by 1 - 0.5 and 1 - 0.25
    assert smooth([0.0, 2.0], beta=0.5) == pytest.approx([0.0, 4 / 3])


def test_suggestion_is_the_middle_of_the_fall_despite_noise():
    lrs = np.geomspace(1e-6, 1.0, 121)
    x = np.log10(lrs)
    # flat, then a fall centred on 1e-3 (from about 1e-4 to 1e-2), then a blow-up near 1; plus noise
    loss = 2 - np.tanh(2 * (x + 3)) + np.exp(3 * (x + 0.5))
    noisy = loss + np.random.default_rng(0).normal(0, 0.02, len(loss))
    got = suggest(list(lrs), smooth(noisy, beta=0.8))
    assert 5e-4 < got < 2e-3
    assert suggest(list(lrs), list(np.linspace(1, 2, 61))) is None  # never falls: no suggestion


def test_range_test_on_a_real_regression_stops_when_the_loss_diverges():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g)
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)

    def batches(epoch):
        for i in range(0, 256, 32):
            yield x[i : i + 32], y[i : i + 32]

    def step(batch, lr):
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(batch[0]), batch[1])
        loss.backward()
        opt.step()
        return loss.item()

    lrs = exponential_lrs(1e-5, 100.0, 100)
    result = range_test(step, cycle_epochs(batches), lrs)
    assert result.stop_reason == "diverged" and len(result.lrs) < 100
    assert result.suggestion is not None and 1e-3 < result.suggestion < result.lrs[-1]
    assert min(result.smoothed) < 0.2 * result.smoothed[0]  # it did learn before blowing up
    with pytest.raises(ConfigError, match="start-lr"):
        exponential_lrs(1.0, 0.1, 100)


def test_lr_find_cli_writes_the_curve_and_suggests_an_lr(tmp_path):
    data = write_digit_folders(tmp_path / "digits", per_class=16)
    out = tmp_path / "lrf"
    args = ["--model", "test_resnet", "--image-size", "16", "--batch-size", "8", "--steps", "30"]
    done = subprocess.run(
        [sys.executable, "-m", "lanner", "lr-find", str(data), "--run", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "lr_find.json").read_text())
    rows = (out / "lr_find.csv").read_text().splitlines()
    assert rows[0] == "lr,loss,smoothed_loss" and len(rows) == 1 + summary["steps"]
    assert (out / "lr_find.png").stat().st_size > 10_000
    assert not (out / "checkpoints").exists()  # nothing of the throwaway model is kept
    if summary["suggestion"] is not None:
        assert f"--lr {summary['suggestion']:.2g}" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "lanner", "lr-find", str(data), "--start-lr", "1", "--end-lr", "0.1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "need 0 < start < end" in bad.stdout + bad.stderr


def test_train_with_lr_auto_uses_the_range_tests_choice(tmp_path):
    import yaml

    data = write_digit_folders(tmp_path / "digits", per_class=16)
    run = tmp_path / "run"
    args = ["--model", "test_resnet", "--image-size", "16", "--batch-size", "8", "--epochs", "1", "--no-eval"]
    done = subprocess.run(
        [sys.executable, "-m", "lanner", "train", str(data), "--run", str(run), "--lr", "auto", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    chosen = yaml.safe_load((run / "config.yaml").read_text())["lr"]
    summary = json.loads((run / "lr_find.json").read_text())
    assert isinstance(chosen, float) and (run / "lr_find.png").is_file()
    assert chosen == (summary["suggestion"] if summary["suggestion"] is not None else 1e-3)
    assert f"--lr auto: {chosen:.2g}" in done.stdout
    segments = json.loads((run / "segments.json").read_text())
    assert segments[0]["base_lr"] == pytest.approx(chosen)


def test_a_time_budget_pays_for_the_range_test_of_lr_auto(tmp_path, monkeypatch):
    """``--time 20s --lr auto`` ends about 20 s after the range test starts, not 20 s after it ends."""
    import io
    import time

    from rich.console import Console

    from lanner import api
    from lanner.config import make_config
    from lanner.engine import lr_auto
    from lanner.engine.checkpoint import load_checkpoint

    data = write_digit_folders(tmp_path / "digits", per_class=16)
    timed = []

    def choose_lr_timed(s):  # the real range test, its start and length noted
        started = time.perf_counter()
        seconds = lr_auto_choose_lr(s)
        timed.append((started, time.perf_counter() - started))
        return seconds

    lr_auto_choose_lr = lr_auto.choose_lr
    monkeypatch.setattr(lr_auto, "choose_lr", choose_lr_timed)
    budget = 20.0
    config = make_config(
        {"data": str(data), "run": str(tmp_path / "run"), "model": "test_resnet", "image_size": 40,
         "batch_size": 8, "lr": "auto", "time": f"{budget:g}s", "cache_dir": str(tmp_path / "cache")}
    )  # fmt: skip
    run = api.train(config, Console(file=io.StringIO()), evaluate_after=False)
    ended = time.perf_counter()
    started, range_test_s = timed[0]
    assert range_test_s > 1.5  # long enough that leaving it out of the budget shows below
    assert ended - started < budget + range_test_s / 2, (ended - started, range_test_s)
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["train_state"]
    assert range_test_s <= state["wall_seconds"] <= budget + 1.0 and state["step"] > 0
