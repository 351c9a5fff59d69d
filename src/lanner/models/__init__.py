"""Models by name: ``create_model(namespace, name)``, ``list_models``, ``is_model``."""

from lanner.models import classifiers, detectors  # noqa: F401  (register their models)
from lanner.models.registry import create_model, is_model, list_models, register_model

__all__ = ["create_model", "is_model", "list_models", "register_model"]
