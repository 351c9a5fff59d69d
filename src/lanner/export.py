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

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lanner._io import write_json
from lanner.errors import ConfigError, LannerError
from lanner.models.loading import LoadedRun, load_run

DETECTOR_OPSET = 17  # the TorchScript-based exporter's; classifiers get the torch.export one's default


class ExportError(LannerError):
    """The exported file does not reproduce the model."""


class _Classifier(nn.Module):
    """Pixels in 0..1 -> class probabilities, normalisation inside."""

    def __init__(self, model: nn.Module, mean, std) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std).softmax(dim=1)


class _Detector(nn.Module):
    """One canvas in 0..1 -> boxes, scores and lanner's labels (the detector normalises itself)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.label_offset = int(getattr(model, "label_offset", 0))

    def forward(self, images: torch.Tensor):
        (out,) = self.model([images[0]])
        return out["boxes"], out["scores"], out["labels"] - self.label_offset


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


def _onnx_export(module: nn.Module, sample: torch.Tensor, path: Path, outputs: list[str], **options) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, tracer notes), not problems
        torch.onnx.export(
            module, (sample,), str(path), input_names=["images"], output_names=outputs, **options
        )


def _export_classifier(loaded: LoadedRun, path: Path) -> tuple[nn.Module, torch.Tensor, dict]:
    prep = loaded.meta["preprocessing"]
    size = int(prep["image_size"])
    module = _Classifier(loaded.model, prep["mean"], prep["std"]).eval()
    sample = torch.rand(2, 3, size, size)
    _onnx_export(
        module,
        sample,
        path,
        ["probabilities"],
        dynamo=True,
        dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
        external_data=False,  # one self-contained file (weights inside; fine below 2 GB)
    )
    spec = {
        "input": {
            "name": "images",
            "shape": ["N", 3, size, size],
            "dtype": "float32",
            "range": "RGB in 0..1",
            "prepare": (
                f"resize the shorter side to {prep['cache_size']} px (bilinear), centre-crop {size} px"
            ),
        },
        "outputs": {"probabilities": "[N, classes] softmax over the classes, in the order of `classes`"},
    }
    return module, sample, spec


def _export_detector(loaded: LoadedRun, path: Path) -> tuple[nn.Module, torch.Tensor, dict]:
    from lanner.data.box_transforms import FILL

    size = int(loaded.meta["image_size"])
    module = _Detector(loaded.model).eval()
    sample = torch.rand(1, 3, size, size)
    _onnx_export(
        module, sample, path, ["boxes", "scores", "labels"], dynamo=False, opset_version=DETECTOR_OPSET
    )
    spec = {
        "input": {
            "name": "images",
            "shape": [1, 3, size, size],
            "dtype": "float32",
            "range": "RGB in 0..1",
            "prepare": (
                f"letterbox: scale the image by s = {size} / max(width, height) (bilinear), paste it at "
                f"the top-left of a {size} x {size} canvas filled with RGB {list(FILL)}"
            ),
        },
        "outputs": {
            "boxes": (
                "[K, 4] x1, y1, x2, y2 in canvas pixels: divide by s for image pixels, clip to the "
                "image and drop boxes left with no area (they lay on the padding)"
            ),
            "scores": "[K] confidence, best first; keep those above your threshold",
            "labels": "[K] index into `classes`",
        },
        "score_threshold_suggested": loaded.config.score_threshold,
    }
    return module, sample, spec


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


def export_run(run: str | Path, out: str | Path | None = None, check: bool = True) -> dict:
    """Export ``run``'s best checkpoint to ONNX (``out``, default RUN/export/model.onnx) + a JSON spec."""
    _require_onnx(check)
    loaded = load_run(run, device="cpu")
    path = Path(out) if out else Path(run) / "export" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    export = _export_detector if loaded.meta["task"] == "detect" else _export_classifier
    with tempfile.TemporaryDirectory(
        dir=path.parent
    ) as tmp:  # keep a previous export until this one checks out
        staged = Path(tmp) / path.name
        module, sample, spec = export(loaded, staged)
        diff = check_with_onnxruntime(staged, module, torch.rand_like(sample)) if check else None
        staged.replace(path)
    info = {
        "task": loaded.meta["task"],
        "classes": loaded.classes,
        "model": loaded.config.model,
        "checkpoint": str(loaded.checkpoint),
        "opset": _opset(path),
        **spec,
        "checked_with_onnxruntime": None if diff is None else {"max_abs_diff": diff},
    }
    write_json(path.with_suffix(".json"), info)
    return {"onnx": str(path), "spec": str(path.with_suffix(".json")), **info}
