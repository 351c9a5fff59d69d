"""Box geometry on xyxy pixel arrays, in COCO's continuous-pixel convention (no +1).

One home for area, intersection and the overlap ratios that tiling, merging, evaluation and the
report all need, so that they cannot disagree about what a box's area is.
"""

from __future__ import annotations

import numpy as np


def _boxes(x) -> np.ndarray:
    """[N, 4]; a float array keeps its precision (merging works in float32, evaluation in float64)."""
    x = np.asarray(x)
    return (x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)).reshape(-1, 4)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """[N] areas of [N, 4] boxes; a box with x1 < x0 or y1 < y0 has area 0."""
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] intersection areas."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])  # [A, B, 2]
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(bottom_right - top_left, 0, None)
    return wh[..., 0] * wh[..., 1]


def _ratio(inter: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(inter, denominator, out=np.zeros_like(inter), where=denominator > 0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] intersection over union."""
    a, b = _boxes(a), _boxes(b)
    inter = box_intersection(a, b)
    return _ratio(inter, box_area(a)[:, None] + box_area(b)[None, :] - inter)


def box_ioa(a: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """[len(a), len(regions)] share of each box of ``a`` inside each region (COCO's crowd overlap)."""
    a, regions = _boxes(a), _boxes(regions)
    inter = box_intersection(a, regions)
    return _ratio(inter, np.broadcast_to(box_area(a)[:, None], inter.shape))


def box_ios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] intersection over the smaller of the two boxes (SAHI's IoS, for merging)."""
    a, b = _boxes(a), _boxes(b)
    smaller = np.minimum(box_area(a)[:, None], box_area(b)[None, :])
    return box_intersection(a, b) / np.maximum(smaller, 1e-9)
