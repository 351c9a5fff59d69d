"""`lanner export RUN`: a trained model as one ONNX file that runs without lanner or PyTorch.

The file takes RGB pixels as floats in 0..1, [N, 3, S, S] (classifiers) or [1, 3, S, S] (detectors,
one letterboxed canvas per call), and does the rest itself: normalisation for classifiers (output
``probabilities`` [N, C]); normalisation, box decoding and NMS for detectors (outputs ``boxes``
[K, 4] xyxy in canvas pixels, ``scores`` [K], ``labels`` [K] as lanner's class indices). A JSON
file beside it says how to prepare the pixels and what the outputs mean, with the class names.

Every export is checked before it is kept: ONNX Runtime runs the file on a test input and its
outputs must match PyTorch's (``--no-check`` skips this when onnxruntime is not installed).

Classifiers go through PyTorch's ``torch.export``-based exporter; detectors through the
TorchScript-based one, because torchvision's post-processing has data-dependent shapes
(``topk`` over a thresholded set, NMS) that ``torch.export`` cannot trace, while the TorchScript
exporter records them as ONNX ops with dynamic sizes.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lanner import __version__
from lanner._io import write_json
from lanner.errors import ConfigError, LannerError
from lanner.rundir import RunDir
from lanner.tasks.base import ExportPlan
from lanner.tasks.loading import load_run


class ExportError(LannerError):
    """The exported file does not reproduce the model."""


def _require_onnx(check: bool) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401

        if check:
            import onnxruntime  # noqa: F401
    except ImportError as e:
        hint = " (or skip the check with --no-check)" if e.name == "onnxruntime" else ""
        raise ConfigError(
            f"ONNX export needs onnx, onnxscript and onnxruntime ({e.name} is missing): "
            f"pip install 'lanner[export]'{hint}"
        ) from e


def _onnx_export(plan: ExportPlan, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, tracer notes), not problems
        torch.onnx.export(
            plan.module, (plan.sample,), str(path), input_names=["images"], output_names=plan.outputs,
            **plan.onnx_options,
        )  # fmt: skip


def _flat(outputs) -> list[np.ndarray]:
    outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
    return [o.detach().cpu().numpy() for o in outputs]


def check_with_onnxruntime(path: Path, module: nn.Module, sample: torch.Tensor, atol: float = 1e-4) -> float:
    """Largest difference between ONNX Runtime's and PyTorch's outputs on ``sample`` (raises if off)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": sample.numpy()})
    with torch.no_grad():
        want = _flat(module(sample))
    if [g.shape for g in got] != [w.shape for w in want]:
        raise ExportError(
            f"{path}: ONNX output shapes {[g.shape for g in got]} != PyTorch {[w.shape for w in want]}"
        )
    diff = max(
        (float(np.abs(g.astype(np.float64) - w).max()) if g.size else 0.0)
        for g, w in zip(got, want, strict=True)
    )
    if diff > atol:
        raise ExportError(f"{path}: ONNX Runtime differs from PyTorch by {diff:.3g} (tolerance {atol:g})")
    return diff


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _add_metadata(path: Path, loaded, spec: dict) -> None:
    """Classes and preprocessing inside the file too (ONNX ``metadata_props``), for tools that keep only
    the .onnx: Netron shows them, onnxruntime's ``get_modelmeta().custom_metadata_map`` reads them."""
    import onnx

    model = onnx.load(str(path))
    props = {
        "lanner.version": __version__,
        "lanner.task": loaded.meta.task,
        "lanner.classes": json.dumps(loaded.classes),
        "lanner.input": json.dumps(spec.get("input", {})),
        "lanner.preprocessing": json.dumps(loaded.meta.get("preprocessing") or {}),
    }
    existing = {p.key: p.value for p in model.metadata_props}
    onnx.helper.set_model_props(model, {**existing, **props})
    onnx.save(model, str(path))


def export_run(run: str | Path, out: str | Path | None = None, check: bool = True) -> dict:
    """Export ``run``'s best checkpoint to ONNX (``out``, default RUN/export/model.onnx) + a JSON spec."""
    _require_onnx(check)
    loaded = load_run(run, device="cpu")
    path = Path(out) if out else RunDir(run).export / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    plan = loaded.task.export_plan(loaded)
    # Staged in a temporary folder: a previous export stays until this one checks out.
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        _onnx_export(plan, staged)
        _add_metadata(staged, loaded, plan.spec)
        diff = check_with_onnxruntime(staged, plan.module, torch.rand_like(plan.sample)) if check else None
        staged.replace(path)
    info = {
        "task": loaded.meta.task,
        "classes": loaded.classes,
        "model": loaded.config.model,
        "checkpoint": str(loaded.checkpoint),
        "opset": _opset(path),
        **plan.spec,
        "checked_with_onnxruntime": None if diff is None else {"max_abs_diff": diff},
    }
    write_json(path.with_suffix(".json"), info)
    return {"onnx": str(path), "spec": str(path.with_suffix(".json")), **info}
