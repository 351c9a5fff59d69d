"""A detector and a crop classifier used as one model: every detected box is cut out (with the padding
the classifier's crops were cut with, see crops.py) and re-labelled by the classifier.

Each box keeps both scores: ``det_score`` (the detector's) and ``cls_score`` (the classifier's
probability of its label); its ``score`` is their product, the chance that there is an object and
that it is of that class, which ranks boxes for mAP. Outputs go to ``DET_RUN/two_stage/`` (laid out
like a run's: metrics.json, eval/, predictions/) with ``two_stage.json`` naming both runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lanner._io import write_json
from lanner.data.cache import square_pixels
from lanner.data.detections import Detections
from lanner.data.pixels import Preprocessing, eval_batch
from lanner.errors import ConfigError
from lanner.rundir import RunDir
from lanner.tasks.base import Task, get_task
from lanner.tasks.loading import LoadedRun, load_for_inference
from lanner.tasks.two_stage.crops import DEFAULT_PAD, crop_images, crops_pad

TWO_STAGE_DIR = "two_stage"
TASK_NAME = "two_stage"
CROP_BATCH = 64


@dataclass
class Relabelled:
    """One image's boxes after the classifier: ``det`` holds the classifier's labels and the product
    score; the detector's own label and score and the classifier's score are kept beside, per box."""

    det: Detections
    det_labels: np.ndarray  # [K] the detector's class index
    det_scores: np.ndarray  # [K]
    cls_scores: np.ndarray  # [K]

    def take(self, index: np.ndarray) -> Relabelled:
        return Relabelled(self.det.take(index), self.det_labels[index], self.det_scores[index],
                          self.cls_scores[index])  # fmt: skip

    def above(self, threshold: float | np.ndarray) -> Relabelled:
        """The boxes whose product score reaches ``threshold`` (one, or [C] per classifier class), best
        first: the same boxes, in the same order, as ``det.above``."""
        order = np.argsort(-self.det.scores, kind="mergesort")
        floor = np.asarray(threshold, dtype=np.float64)
        if floor.ndim:
            floor = floor[self.det.labels[order]]
        return self.take(order[self.det.scores[order] >= floor])


@dataclass
class TwoStage:
    detector: LoadedRun
    classifier: LoadedRun
    pad: float  # the crops' padding, as a fraction of the box's width/height on each side

    @property
    def classes(self) -> list[str]:
        return self.classifier.classes

    @property
    def task(self) -> Task:
        return get_task(TASK_NAME)

    @property
    def run(self) -> RunDir:
        return RunDir(self.detector.run.path / TWO_STAGE_DIR)

    def describe(self) -> str:
        d, c = self.detector, self.classifier
        return (f"two-stage: detector {d.run.path} ({d.meta.model_name}, {len(d.classes)} classes), "
                f"classifier {c.run.path} ({c.meta.model_name}, classes {', '.join(c.classes)}), "
                f"crops padded by {self.pad:g}")  # fmt: skip

    def record(self, extra: dict | None = None) -> None:
        write_json(self.run / "two_stage.json", {
            "detector": str(self.detector.run.path), "classifier": str(self.classifier.run.path),
            "detector_classes": self.detector.classes, "classes": self.classes, "pad": self.pad,
            "score": "det_score * cls_score", **(extra or {}),
        })  # fmt: skip


def _check_roles(detector: LoadedRun, classifier: LoadedRun) -> None:
    if detector.meta.task != "detect":
        raise ConfigError(
            f"{detector.run.path}: a {detector.meta.task} run; --classify needs a detector run first"
        )
    if classifier.meta.task != "classify":
        raise ConfigError(
            f"--classify {classifier.run.path}: a {classifier.meta.task} run; give a classifier run "
            "(e.g. one trained on `lanner crops` of the detection data)"
        )


def load_two_stage(detector: str | Path, classifier: str | Path, device: str = "auto",
                   precision: str = "auto") -> TwoStage:  # fmt: skip
    """Both runs ready for inference; ConfigError when the first is no detector or the second no
    classifier. The padding is the one the classifier's crops were cut with (crops.csv), else 0.1."""
    det = load_for_inference(detector, device, precision)
    cls = load_for_inference(classifier, device, precision)
    _check_roles(det, cls)
    pad = crops_pad(cls.config.data)
    return TwoStage(det, cls, DEFAULT_PAD if pad is None else pad)


@torch.no_grad()
def classify_crops(classifier: LoadedRun, crops: list[Image.Image]) -> torch.Tensor:
    """[K, C] the classifier's probabilities for in-memory crops, prepared as its training files were."""
    prep = Preprocessing.from_dict(classifier.meta.get("preprocessing"))
    out = [torch.zeros(0, len(classifier.classes))]
    for start in range(0, len(crops), CROP_BATCH):
        pixels = np.stack([square_pixels(c, prep.cache_size) for c in crops[start : start + CROP_BATCH]])
        logits = classifier.model(eval_batch(pixels, prep, classifier.device)).float().cpu()
        out.append(logits.softmax(1))
    return torch.cat(out)


def relabel(pipeline: TwoStage, img: Image.Image, det: Detections) -> Relabelled:
    """The classifier's label for each of ``det``'s boxes on ``img`` (full-image pixels)."""
    probs = classify_crops(pipeline.classifier, crop_images(img, det.boxes, pipeline.pad))
    cls_scores, labels = probs.max(1) if len(probs) else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
    cls_scores = cls_scores.numpy().astype(np.float64)
    det_scores = np.asarray(det.scores, dtype=np.float64)
    both = Detections(det.boxes, det_scores * cls_scores, labels.numpy())
    return Relabelled(both, np.asarray(det.labels), det_scores, cls_scores)
