"""Object detection as a training task: letterboxed cached canvases in, torchvision detector losses out.

Batches are cut from the letterbox cache (:mod:`lanner.data.box_transforms`) and augmented as a
whole batch; images without boxes stay in the epoch as negatives. Validation runs the detector
on the validation canvases, maps boxes back to original pixels and scores them with the same COCO
evaluation ``lanner eval`` uses, so ``val_map`` in history.csv is the number eval would report.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lanner.data.box_transforms import (
    FILL,
    BoxTargets,
    LetterboxCache,
    augment_detection_batch,
    scaled_targets,
)
from lanner.data.detections import Detections
from lanner.data.pixels import batch_generator, to_float
from lanner.data.records import Dataset
from lanner.engine.distributed import WHOLE, Part, shard_batches
from lanner.engine.trainer import TrainTask
from lanner.eval.detection import evaluate_detections
from lanner.predict.tta import detect_views, fuse_views
from lanner.tasks.base import TrainRecipe

EVAL_BATCH = 16


def to_model_targets(targets: list[BoxTargets], label_offset: int, device: torch.device) -> list[dict]:
    """torchvision's target dicts; ``label_offset`` is 1 where class 0 means background."""
    return [
        {
            "boxes": torch.as_tensor(t.boxes, dtype=torch.float32).reshape(-1, 4).to(device),
            "labels": (torch.as_tensor(t.labels, dtype=torch.int64) + label_offset).to(device),
        }
        for t in targets
    ]


def to_detections(output: dict, scale: float, width: int, height: int, label_offset: int) -> Detections:
    """One model output on a canvas -> Detections in the original image's pixels."""
    boxes = output["boxes"].float().cpu().numpy() / scale  # [K, 4] canvas -> original pixels
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    labels = output["labels"].cpu().numpy() - label_offset
    # Clipping can flatten a box lying past the image edge; a zero-area box frames nothing.
    real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    scores = output["scores"].float().cpu().numpy()
    return Detections(boxes[real].astype(np.float64), scores[real].astype(np.float64), labels[real])


@torch.no_grad()
def detect_canvases(
    model: nn.Module,
    canvases: np.ndarray,
    sizes: np.ndarray,
    device: torch.device,
    batch_size: int = EVAL_BATCH,
) -> list[Detections]:
    """Letterboxed canvases [N, S, S, 3] uint8 with original (width, height) [N, 2] -> one Detections each."""
    offset = getattr(model, "label_offset", 0)
    side = canvases.shape[1]
    out: list[Detections] = []
    for start in range(0, len(canvases), batch_size):
        x = to_float(canvases[start : start + batch_size], device)  # [B, 3, S, S]
        for output, (w, h) in zip(model(list(x)), sizes[start : start + batch_size], strict=True):
            out.append(to_detections(output, side / max(w, h), int(w), int(h), offset))
    return out


def detect_canvases_tta(model: nn.Module, canvases: np.ndarray, sizes: np.ndarray, device: torch.device,
                        tta: bool = False) -> list[Detections]:  # fmt: skip
    """:func:`detect_canvases`, or with ``tta`` its views (mirror, smaller scale) fused by WBF
    (:mod:`lanner.predict.tta`)."""
    if not tta:
        return detect_canvases(model, canvases, sizes, device)
    return fuse_views(detect_views(lambda c, s: detect_canvases(model, c, s, device), canvases, sizes))


def _freeze_batchnorm(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.Dropout):
            m.eval()


def nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


class DetectionTask(TrainTask):
    """Supplies the trainer with batches, loss and COCO validation metrics for object detection."""

    monitor = "val_map"
    validates_in_parts = True  # with several processes, each validates its part (see validate)
    sync_batchnorm_by_default = True  # several GPUs: per-GPU batches are small (see --sync-bn)
    normalize: dict | None = None  # the pretrained backbone's mean/std, when not ImageNet's (prepare sets it)

    def __init__(
        self,
        *,
        cache: LetterboxCache,
        dataset: Dataset,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        recipe: TrainRecipe,
        score_threshold: float = 0.25,
        label_offset: int = 0,
        device: torch.device | None = None,
    ) -> None:
        self.cache, self.dataset = cache, dataset
        self.train_idx, self.val_idx = np.sort(train_idx), np.sort(val_idx)
        self.train_eval_idx = recipe.train_eval_sample(self.train_idx, len(self.val_idx))
        # --augment auto: the default preset whatever the run's length (measured for classification only).
        augment = "default" if recipe.augment == "auto" else recipe.augment
        self.batch_size, self.augment, self.hflip = recipe.batch_size, augment, recipe.hflip
        self.min_visibility, self.score_threshold = recipe.min_visibility, score_threshold
        self.geometry = recipe.geometry
        self.label_offset, self.seed = label_offset, recipe.seed
        self.device = device or torch.device("cpu")
        scales = cache.scales
        self.targets = [
            scaled_targets(r.boxes, r.labels, r.iscrowd, float(s))
            for r, s in zip(dataset.records, scales, strict=True)
        ]

    @property
    def classes(self) -> list[str]:
        return list(self.dataset.classes)

    @property
    def image_size(self) -> int:
        return int(self.cache.images.shape[1])

    @property
    def num_train_images(self) -> int:
        return len(self.train_idx)

    @property
    def num_val_images(self) -> int:
        return len(self.val_idx)

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_idx) / self.batch_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return self.train_idx[torch.randperm(len(self.train_idx), generator=g).numpy()]

    def train_batches(self, epoch: int, skip: int = 0, shard: tuple[int, int] = (0, 1)):
        """Batches of ``epoch`` from step ``skip``; ``shard`` (rank, processes): this process's share."""
        order = self.epoch_order(epoch)
        for b in shard_batches(self.steps_per_epoch(), skip, *shard):
            idx = np.sort(order[b * self.batch_size : (b + 1) * self.batch_size])  # sequential memmap reads
            yield self.training_batch(self.cache.images[idx], [self.targets[i] for i in idx], epoch, b)

    def training_batch(self, images_u8: np.ndarray, targets: list[BoxTargets], epoch: int, number: int):
        """Canvases [B, S, S, 3] uint8 and their canvas targets -> the augmented batch (images, target
        dicts) on the device; ``number`` (the batch's place in the epoch) seeds its augmentation."""
        x, targets = augment_detection_batch(
            images_u8,
            targets,
            preset=self.augment,
            hflip=self.hflip,
            min_visibility=self.min_visibility,
            g=batch_generator(self.seed, epoch, number),
            device=self.device,
            geometry=self.geometry,
        )
        return list(x), to_model_targets(targets, self.label_offset, self.device)

    def training_step(self, model, batch) -> tuple[torch.Tensor, int]:
        images, targets = batch
        losses = model(images, targets)
        return sum(losses.values()), len(images)

    def validation_loss(self, model: nn.Module, idx: np.ndarray) -> tuple[float, int]:
        """The training loss summed over the cached images ``idx`` (no augmentation, BN statistics
        left untouched), and their count."""
        model.train()
        _freeze_batchnorm(model)
        total = 0.0
        try:
            for start in range(0, len(idx), EVAL_BATCH):
                chunk = idx[start : start + EVAL_BATCH]
                x = list(to_float(self.cache.images[chunk], self.device))
                targets = to_model_targets([self.targets[i] for i in chunk], self.label_offset, self.device)
                total += float(sum(model(x, targets).values())) * len(chunk)
        finally:
            model.eval()
        return total, len(idx)

    def predict_cached(self, model: nn.Module, idx: np.ndarray) -> list[Detections]:
        return detect_canvases(model, self.cache.images[idx], self.cache.sizes[idx], self.device)

    def coco_metrics(self, idx: np.ndarray, predictions: list[Detections], prefix: str) -> dict[str, float]:
        """mAP, mAP@.5, mAP@.75 of ``predictions`` for the cached images ``idx``, keys ``prefix_map...``."""
        images = Dataset(self.classes, [self.dataset.records[i] for i in idx], "detect")
        metrics = evaluate_detections(images, predictions, score_threshold=self.score_threshold)
        return {f"{prefix}_{k}": nan_if_none(metrics[k]) for k in ("map", "map50", "map75")}

    def validate(self, model, part: Part = WHOLE) -> dict[str, float]:
        """Val loss and mAP, and the same mAP on the fixed sample of training images (no augmentation).

        With several processes each takes its ``part`` of the images; process 0 gathers the
        predictions in order and scores them (the others return {})."""
        if len(self.val_idx) == 0:
            return {}
        losses = part.gather([self.validation_loss(model, part.of(self.val_idx))])
        val_preds = part.gather(self.predict_cached(model, part.of(self.val_idx)))
        train_preds = part.gather(self.predict_cached(model, part.of(self.train_eval_idx)))
        if not part.is_main:
            return {}
        metrics = {
            "val_loss": sum(t for t, _ in losses) / max(sum(n for _, n in losses), 1),
            **self.coco_metrics(self.val_idx, val_preds, "val"),
        }
        if len(self.train_eval_idx):
            metrics |= self.coco_metrics(self.train_eval_idx, train_preds, "train")
        return metrics

    def meta(self) -> dict:
        return {
            "task": "detect",
            "classes": self.classes,
            "image_size": self.image_size,
            "letterbox": {"fill": list(FILL), "align": "top-left"},
            "score_threshold": self.score_threshold,
            **({"normalize": self.normalize} if self.normalize else {}),
        }
