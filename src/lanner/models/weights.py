"""Weights into and out of training: loading a pretrained file, freezing the backbone."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lanner.errors import ConfigError
from lanner.rundir import RunDir


def load_pretrained(model: nn.Module, source: str | Path) -> list[str]:
    """Load weights from a local file (timm/torch state dict, safetensors, or a lanner checkpoint).

    Tensors whose shape differs (a classifier head for other classes) are left as initialised;
    their names are returned so the caller can say which layers start fresh. Nothing is downloaded:
    hub names fail with a message explaining how to pass a file instead.
    """
    path = Path(source)
    if path.is_dir():
        path = RunDir(path).checkpoint("best")
    if not path.exists():
        raise ConfigError(
            f"pretrained weights {source!r}: no such file. lanner never downloads weights at run time; "
            "download them once (e.g. a timm .safetensors / .pth file) and pass the local path, "
            "or pass a lanner run directory to start from its best checkpoint"
        )
    state = _read_state_dict(path)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    fresh = sorted(k for k in own if k not in usable)
    if not usable:
        raise ConfigError(f"{path}: no tensor matches the model's layers; is it for another architecture?")
    model.load_state_dict(usable, strict=False)
    return fresh


def _read_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state["state_dict"] if isinstance(state, dict) and "state_dict" in state else state


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze everything except the classifier head (timm's get_classifier())."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_params = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    for p in model.parameters():
        if id(p) not in head_params:
            p.requires_grad_(trainable)
