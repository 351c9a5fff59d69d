"""Offline pretrained-weight caches written to disk, laid out as huggingface_hub and torch read them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def make_hf_cache(root: Path, name: str = "test_resnet.r160_in1k", seed: int = 1) -> dict[str, torch.Tensor]:
    """``root/hub/models--timm--<name>/snapshots/<hash>/model.safetensors`` holding random weights of
    the architecture (1000 classes, as timm's ImageNet files); its state dict."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(name.split(".")[0], pretrained=False)
    with torch.no_grad():  # BN running stats that differ from a fresh model's
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / "hub" / f"models--timm--{name}"
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    save_file(state, str(repo / "snapshots" / commit / "model.safetensors"))
    (repo / "snapshots" / commit / "config.json").write_text(json.dumps({"architecture": name.split(".")[0]}))
    return state


def offline_env(root: Path) -> dict[str, str]:
    """Environment of a lanner process that must find weights in ``root``'s caches only."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(root),
        HF_HUB_CACHE=str(root / "hub"),
        TORCH_HOME=str(root / "torch"),
        PYTHONPATH=str(REPO / "src"),
        LANNER_CACHE=str(root / "lanner-cache"),
    )
    return env


def lanner(args: list, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lanner", *map(str, args)], capture_output=True, text=True, env=env, cwd=REPO
    )
