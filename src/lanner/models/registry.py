"""A name-keyed model registry, namespaced (one namespace per kind of model: ``classify``, ``detect``).

Builders register by name (``@register_model(namespace, name)`` over a keyword-only builder);
a namespace may also have a *family*, a library whose every model name is valid (timm for
classifiers). Registering a duplicate name raises.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from lanner.errors import ConfigError

_BUILDERS: dict[str, dict[str, Callable[..., nn.Module]]] = {}


@dataclass(frozen=True)
class Family:
    """A library of models: every name it lists is a model of the namespace."""

    list_models: Callable[[str], list[str]]
    is_model: Callable[[str], bool]
    create: Callable[..., nn.Module]


_FAMILIES: dict[str, Family] = {}


def register_model(namespace: str, name: str):
    """Decorator: ``@register_model("detect", "fcos_mobilenet")`` over a keyword-only builder."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        builders = _BUILDERS.setdefault(namespace, {})
        if name in builders:
            raise ValueError(f"model {name!r} is already registered for {namespace}")
        builders[name] = fn
        return fn

    return wrap


def register_family(namespace: str, family: Family) -> None:
    if namespace in _FAMILIES:
        raise ValueError(f"{namespace} already has a model family")
    _FAMILIES[namespace] = family


def list_models(namespace: str = "classify", pattern: str = "*") -> list[str]:
    names = set(fnmatch.filter(_BUILDERS.get(namespace, {}), pattern))
    family = _FAMILIES.get(namespace)
    return sorted(names | set(family.list_models(pattern) if family else ()))


def is_model(namespace: str, name: str) -> bool:
    family = _FAMILIES.get(namespace)
    return name in _BUILDERS.get(namespace, {}) or (family is not None and family.is_model(name))


def _unknown(namespace: str, name: str) -> ConfigError:
    close = difflib.get_close_matches(name, list_models(namespace), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ConfigError(f"unknown {namespace} model {name!r}{hint}; see `lanner models --task {namespace}`")


def create_model(namespace: str, name: str, *, num_classes: int, **kwargs) -> nn.Module:
    """Build a model with freshly initialised weights (weights are loaded separately)."""
    if not is_model(namespace, name):
        raise _unknown(namespace, name)
    if name in _BUILDERS.get(namespace, {}):
        return _BUILDERS[namespace][name](num_classes=num_classes, **kwargs)
    return _FAMILIES[namespace].create(name, num_classes=num_classes, **kwargs)
