"""`lanner export` for classifiers: normalisation inside, class probabilities out."""

from __future__ import annotations

import torch
from torch import nn

from lanner.tasks.base import ExportPlan


class ClassifierForExport(nn.Module):
    """Pixels in 0..1 -> class probabilities, normalisation inside."""

    def __init__(self, model: nn.Module, mean, std) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std).softmax(dim=1)


# The torch.export-based ONNX exporter fails on plain ResNets before torch 2.6 (seen on 2.5.1); there the
# TorchScript-based one, with the detectors' opset, writes the same graph.
LEGACY_OPSET = 17


def classifier_onnx_options(version: str = torch.__version__) -> dict:
    major, minor = (int(part) for part in version.split("+")[0].split(".")[:2])
    if (major, minor) < (2, 6):
        return {"dynamo": False, "dynamic_axes": {"images": {0: "batch"}}, "opset_version": LEGACY_OPSET}
    return {
        "dynamo": True,
        "dynamic_shapes": {"images": {0: torch.export.Dim("batch", min=1)}},
        "external_data": False,  # one self-contained file (weights inside; fine below 2 GB)
    }


def classifier_export_plan(loaded) -> ExportPlan:
    prep = loaded.meta.get("preprocessing")
    size = int(prep["image_size"])
    options = classifier_onnx_options()
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
    module = ClassifierForExport(loaded.model, prep["mean"], prep["std"]).eval()
    return ExportPlan(module, torch.rand(2, 3, size, size), ["probabilities"], options, spec)
