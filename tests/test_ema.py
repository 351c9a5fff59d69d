"""--ema (a moving average of the weights is what is validated and kept) and --clip-grad, on real training."""

from __future__ import annotations

import torch
from helpers import write_digit_folders

from lanner import api
from lanner.config import make_config
from lanner.engine.checkpoint import load_checkpoint
from lanner.engine.trainer import optimizer_step
from lanner.models.classifiers import build_classifier


def _config(data, run, cache, **extra):
    return make_config(
        {"data": str(data), "run": str(run), "model": "test_resnet", "image_size": 16, "batch_size": 8,
         "hflip": False, "augment": "light", "schedule": {"name": "constant"}, "lr": 0.003,
         "cache_dir": str(cache), **extra}
    )  # fmt: skip


def test_ema_is_kept_as_the_model_and_a_resume_continues_the_same_average(tmp_path):
    data = write_digit_folders(tmp_path / "digits", per_class=10)
    cache = tmp_path / "cache"
    full = api.train(_config(data, tmp_path / "full", cache, epochs=2, ema=0.9), evaluate_after=False)
    cut = api.train(_config(data, tmp_path / "cut", cache, epochs=1, ema=0.9), evaluate_after=False)
    api.resume(cut, evaluate_after=False, epochs=2)  # a constant LR: the same steps as the full run

    a = load_checkpoint(full / "checkpoints" / "last.ckpt")
    b = load_checkpoint(cut / "checkpoints" / "last.ckpt")
    weights = [k for k, v in a["state_dict"].items() if v.is_floating_point()]
    # The kept model is the average, not the weights that train (those are kept beside it to resume).
    assert any(not torch.equal(a["state_dict"][k], a["train_weights"][k]) for k in weights)
    # The resume restored the average: it ends where the uninterrupted run's did (with a fresh average
    # started from the resumed weights, it would not).
    for k in weights:
        torch.testing.assert_close(b["train_weights"][k], a["train_weights"][k], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], rtol=1e-4, atol=1e-5)


class _OneBatch:
    """The training-step part of a task: cross-entropy on one fixed batch."""

    def training_step(self, model, batch):
        x, y = batch
        return torch.nn.functional.cross_entropy(model(x), y), len(y)


def _grad_norm(model) -> float:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()


def test_clip_grad_bounds_the_gradient_norm_of_the_update():
    torch.manual_seed(0)
    model = build_classifier("test_resnet", 3)[0]
    batch = (torch.randn(4, 3, 16, 16) * 50, torch.tensor([0, 1, 2, 0]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    optimizer_step(_OneBatch(), model, optimizer, scaler, _no_autocast, batch, 0.0)
    unclipped = _grad_norm(model)
    optimizer_step(_OneBatch(), model, optimizer, scaler, _no_autocast, batch, 0.0, clip_grad=0.01)
    assert unclipped > 0.1 and _grad_norm(model) <= 0.01 * 1.0001


def _no_autocast():
    return torch.autocast("cpu", enabled=False)
