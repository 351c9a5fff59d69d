"""What ``lanner.load(RUN).predict(x)`` returns per image: typed results, not CSV rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Classification:
    """A classifier's answer for one image: the top class, its probability and the top k."""

    label: str
    score: float
    topk: list[tuple[str, float]] = field(default_factory=list)  # (class, probability), best first

    def to_dict(self) -> dict:
        return {"label": self.label, "score": self.score, "topk": [list(t) for t in self.topk]}


@dataclass(frozen=True)
class Detection:
    """A detector's boxes on one image, in that image's own pixels, highest score first."""

    boxes: np.ndarray  # [K, 4] float xyxy
    labels: list[str]
    scores: np.ndarray  # [K] float

    def __len__(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict:
        return {"boxes": self.boxes.tolist(), "labels": list(self.labels), "scores": self.scores.tolist()}
