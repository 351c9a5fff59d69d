"""`lanner export` for detectors: normalisation, box decoding and NMS inside; one letterboxed canvas in.

Through the TorchScript-based exporter, because torchvision's post-processing has data-dependent
shapes (``topk`` over a thresholded set, NMS) that ``torch.export`` cannot trace.
"""

from __future__ import annotations

import torch
from torch import nn

from lanner.data.box_transforms import FILL
from lanner.tasks.base import ExportPlan

DETECTOR_OPSET = 17  # the TorchScript-based exporter's; classifiers get the torch.export one's default


class DetectorForExport(nn.Module):
    """One canvas in 0..1 -> boxes, scores and lanner's labels (the detector normalises itself)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.label_offset = int(getattr(model, "label_offset", 0))

    def forward(self, images: torch.Tensor):
        (out,) = self.model([images[0]])
        return out["boxes"], out["scores"], out["labels"] - self.label_offset


def _spec(size: int, score_threshold: float) -> dict:
    return {
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
        "score_threshold_suggested": score_threshold,
    }


def detector_export_plan(loaded) -> ExportPlan:
    size = int(loaded.meta.get("image_size"))
    module = DetectorForExport(loaded.model).eval()
    options = {"dynamo": False, "opset_version": DETECTOR_OPSET}
    spec = _spec(size, loaded.config.score_threshold)
    return ExportPlan(module, torch.rand(1, 3, size, size), ["boxes", "scores", "labels"], options, spec)
