"""Model registry: ``create_model(task, name, ...)``, ``list_models(task, pattern)``."""

from lanner.models.registry import create_model, is_model, list_models, register_model

__all__ = ["create_model", "is_model", "list_models", "register_model"]
