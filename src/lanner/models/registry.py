"""A name-keyed model registry namespaced by task.

Classifiers come from timm (any timm model name works). Detectors are registered by their
builder modules under the ``detect`` namespace. Registering a duplicate name raises.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lanner.errors import ConfigError

_BUILDERS: dict[str, dict[str, Callable[..., nn.Module]]] = {"classify": {}, "detect": {}}
DEFAULT_MODELS = {
    # (task, device type) -> (model, image size). Small and fast on CPU, stronger on GPU.
    ("classify", "cpu"): ("resnet18", 128),
    ("classify", "cuda"): ("resnet50", 224),
}


def register_model(task: str, name: str):
    """Decorator: ``@register_model("detect", "fcos_mobilenet")`` over a keyword-only builder."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS[task]:
            raise ValueError(f"model {name!r} is already registered for {task}")
        _BUILDERS[task][name] = fn
        return fn

    return wrap


def _load_detectors() -> None:
    try:
        import lanner.models.detectors  # noqa: F401  (registers detect builders on import)
    except ModuleNotFoundError as e:
        if e.name != "lanner.models.detectors":
            raise


def list_models(task: str = "classify", pattern: str = "*") -> list[str]:
    if task == "classify":
        import timm

        return sorted(set(timm.list_models(pattern)) | set(fnmatch.filter(_BUILDERS["classify"], pattern)))
    _load_detectors()
    return sorted(fnmatch.filter(_BUILDERS[task], pattern))


def is_model(task: str, name: str) -> bool:
    if task == "classify":
        import timm

        return name in _BUILDERS["classify"] or timm.is_model(name)
    _load_detectors()
    return name in _BUILDERS[task]


def _unknown(task: str, name: str) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(name, list_models(task), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ConfigError(f"unknown {task} model {name!r}{hint}; see `lanner models --task {task}`")


def create_model(task: str, name: str, *, num_classes: int, **kwargs) -> nn.Module:
    """Build a model with freshly initialised weights (weights are loaded separately)."""
    if not is_model(task, name):
        raise _unknown(task, name)
    if name in _BUILDERS[task]:
        return _BUILDERS[task][name](num_classes=num_classes, **kwargs)
    import timm

    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)


def default_model(task: str, device: torch.device) -> tuple[str, int]:
    key = (task, "cuda" if device.type == "cuda" else "cpu")
    if key in DEFAULT_MODELS:
        return DEFAULT_MODELS[key]
    _load_detectors()
    return DEFAULT_MODELS[key]


def load_pretrained(model: nn.Module, source: str | Path) -> list[str]:
    """Load weights from a local file (timm/torch state dict, safetensors, or a lanner checkpoint).

    Tensors whose shape differs (a classifier head for other classes) are left as initialised;
    their names are returned so the caller can say which layers start fresh. Nothing is downloaded:
    hub names fail with a message explaining how to pass a file instead.
    """
    path = Path(source)
    if path.is_dir():
        path = path / "checkpoints" / "best.ckpt"
    if not path.exists():
        raise ConfigError(
            f"pretrained weights {source!r}: no such file. lanner never downloads weights at run time; "
            "download them once (e.g. a timm .safetensors / .pth file) and pass the local path, "
            "or pass a lanner run directory to start from its best checkpoint"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    fresh = sorted(k for k in own if k not in usable)
    if not usable:
        raise ConfigError(f"{path}: no tensor matches the model's layers; is it for another architecture?")
    model.load_state_dict(usable, strict=False)
    return fresh


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze everything except the classifier head (timm's get_classifier())."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_params = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    for p in model.parameters():
        if id(p) not in head_params:
            p.requires_grad_(trainable)
