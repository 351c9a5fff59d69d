"""Classifiers: every timm model, by name, in the ``classify`` namespace, and the classic small nets
of :mod:`lanner.models.classic` beside them."""

from __future__ import annotations

import timm
import timm.data
from torch import nn

from lanner.models import classic  # noqa: F401  (registers the classic nets)
from lanner.models.registry import Family, create_model, register_family


def _timm_create(name: str, *, num_classes: int, **kwargs) -> nn.Module:
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)


register_family("classify", Family(timm.list_models, timm.is_model, _timm_create))


def build_classifier(name: str, num_classes: int) -> tuple[nn.Module, tuple, tuple]:
    """A classifier and the mean/std its pretrained weights expect (ImageNet's by default)."""
    model = create_model("classify", name, num_classes=num_classes)
    cfg = timm.data.resolve_data_config({}, model=model)
    return model, tuple(cfg["mean"]), tuple(cfg["std"])


def default_input_size(model: nn.Module) -> int:
    """The input size a classifier was designed for (timm's pretrained config; 224 when unsaid)."""
    return int(timm.data.resolve_data_config({}, model=model)["input_size"][-1])
