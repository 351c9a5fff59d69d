"""The one type for a model's boxes on one image, used by training, merging, evaluation and predict."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


def _array(x, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    # Keep a float array's own precision (tile merging works in float32, evaluation in float64).
    return x if dtype is float and np.issubdtype(x.dtype, np.floating) else x.astype(dtype)


@dataclass
class Detections:
    """Predictions for one image: xyxy pixels, scores, class indices; unpacks as (boxes, scores, labels)."""

    boxes: np.ndarray  # [K, 4] float
    scores: np.ndarray  # [K] float
    labels: np.ndarray  # [K] int class index

    def __post_init__(self) -> None:
        # Accept lists/tensors and empty inputs of any shape; fail early on mismatched lengths.
        self.boxes = _array(self.boxes, float).reshape(-1, 4)
        self.scores = _array(self.scores, float).reshape(-1)
        self.labels = _array(self.labels, np.int64).reshape(-1)
        if not len(self.boxes) == len(self.scores) == len(self.labels):
            raise ValueError(
                f"Detections need as many boxes, scores and labels; got "
                f"{len(self.boxes)}, {len(self.scores)}, {len(self.labels)}"
            )

    @classmethod
    def empty(cls, dtype=np.float64) -> Detections:
        return cls(np.zeros((0, 4), dtype), np.zeros(0, dtype), np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.boxes)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.boxes, self.scores, self.labels))

    def take(self, index: np.ndarray) -> Detections:
        """The detections at ``index`` (an index or boolean array), in that order."""
        return Detections(self.boxes[index], self.scores[index], self.labels[index])

    def above(self, score_threshold: float | np.ndarray) -> Detections:
        """The detections scoring at least ``score_threshold`` (one number, or [C] per class index),
        highest score first (stable)."""
        order = np.argsort(-self.scores, kind="mergesort")
        floor = np.asarray(score_threshold, dtype=np.float64)
        if floor.ndim:  # per class: each detection against its own class's threshold
            floor = floor[self.labels[order]]
        return self.take(order[self.scores[order] >= floor])
