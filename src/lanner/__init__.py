"""lanner: train, evaluate and share image classifiers and object detectors on your own images.

The verbs of the command line are functions here (``lanner.train``, ``lanner.evaluate``,
``lanner.predict``, ``lanner.check``, ...), and ``lanner.load(RUN)`` gives a predictor for images in
memory; see docs/python-api.md. They are imported on first use, so ``import lanner`` (and
``lanner --help``) does not load torch.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(
        (
            "train", "resume", "evaluate", "predict", "check", "convert", "report", "export", "probe",
            "lr_find", "schedule_preview", "list_models", "demo", "push", "review",
        ),
        "lanner.api",
    ),
    **dict.fromkeys(("load", "Predictor"), "lanner.predictor"),
    **dict.fromkeys(("Classification", "Detection"), "lanner.predict.results"),
    **dict.fromkeys(("TrainConfig", "InferenceOptions", "make_config", "load_config"), "lanner.config"),
    **dict.fromkeys(("LannerError", "ConfigError", "DataError"), "lanner.errors"),
}  # fmt: skip
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lanner' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _Package(types.ModuleType):
    """The verbs ``predict``, ``report``, ``export`` and ``demo`` share their names with lanner's own
    modules (lanner/predict/, lanner/report/, export.py, demo.py). Importing such a module would set
    the package's attribute to it and hide the verb; this keeps the verb. The modules stay
    importable by their dotted names (``from lanner.predict.merge import ...``), which Python looks
    up in ``sys.modules``, not here."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
