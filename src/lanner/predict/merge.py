"""Merging detections from overlapping tiles into one set per image.

All functions are class-aware (boxes of different labels never interact), take numpy arrays or
torch tensors and return :class:`~lanner.data.detections.Detections` (boxes [K, 4] float32 xyxy,
scores [K] float32, labels [K] int64; it unpacks as that triple) sorted by descending score.

Boxes cut by a tile edge ("partials") are the main source of double counting: an object on a
tile border shows up as a truncated box on one tile and a whole box on the neighbour, and the two
overlap little in IoU terms. The rule used here (see :func:`merge_detections`):

1. a detection touching an *inner* tile border (not the image border) is a partial;
2. a partial lying inside a full detection of its class (intersection over the partial's own area
   ``>= threshold``) is absorbed by it: some tile saw the whole object, so the piece adds nothing;
3. the remaining partials of one class that overlap by intersection-over-smaller (IoS) are pieces
   of one object seen by no tile whole; they are stitched into their enclosing box (connected
   components, so chains of pieces across several tiles join up);
4. in the final merge (NMS, NMM or WBF, with the metric asked for) full boxes rank before partials,
   so a whole detection is the one that survives or anchors its cluster.

Steps 2 and 3 use IoS whatever the final metric: a half-object inside a whole one has IoU ~ 0.5,
too low to be recognised as a duplicate by IoU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from scipy.sparse.csgraph import connected_components
from torchvision.ops import batched_nms

from lanner.data.detections import Detections
from lanner.data.geometry import box_area, box_intersection, box_ios, box_iou

Metric = Literal["iou", "ios"]


def _np(x, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def as_detections(boxes, scores, labels) -> Detections:
    """Detections in float32 (tile merging's precision) with the canonical shapes."""
    return Detections(_np(boxes, np.float32), _np(scores, np.float32), _np(labels, np.int64))


def _empty() -> Detections:
    return Detections.empty(np.float32)


def pairwise_overlap(a: np.ndarray, b: np.ndarray, metric: Metric = "iou") -> np.ndarray:
    """Overlap matrix [A, B] between two box sets: IoU, or IoS (intersection over the smaller box).

    Both from :mod:`lanner.data.geometry`, in the boxes' own precision.
    """
    if metric == "iou":
        return box_iou(a, b)
    if metric != "ios":
        raise ValueError(f"overlap metric must be 'iou' or 'ios', got {metric!r}")
    return box_ios(a, b)


def _rank_order(scores: np.ndarray, partial: np.ndarray | None) -> np.ndarray:
    """Indices best first: full boxes before partials, then by descending score (stable)."""
    if partial is None:
        return np.argsort(-scores, kind="stable")
    return np.lexsort((-scores, partial.astype(np.int8)))  # last key is the primary one


def _by_class(
    boxes, scores, labels, partial, merge_one: Callable[..., tuple[np.ndarray, np.ndarray]]
) -> Detections:
    """Run ``merge_one(boxes, scores, partial) -> (boxes, scores)`` on each class separately."""
    boxes, scores, labels = as_detections(boxes, scores, labels)
    if len(boxes) == 0:
        return _empty()
    partial = None if partial is None else _np(partial, bool).reshape(-1)
    out_boxes, out_scores, out_labels = [], [], []
    for label in np.unique(labels):
        sel = labels == label
        b, s = merge_one(boxes[sel], scores[sel], None if partial is None else partial[sel])
        out_boxes.append(b)
        out_scores.append(s)
        out_labels.append(np.full(len(s), label, np.int64))
    b, s, lab = np.concatenate(out_boxes), np.concatenate(out_scores), np.concatenate(out_labels)
    order = np.argsort(-s, kind="stable")
    return Detections(b[order].astype(np.float32), s[order].astype(np.float32), lab[order])


def greedy_clusters(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, metric: Metric, partial: np.ndarray | None
) -> list[np.ndarray]:
    """Greedy clustering of one class: the best unclaimed box claims every unclaimed box that
    overlaps it by ``>= threshold``. Each cluster is an index array whose first entry is its keeper.

    Written by hand: torchvision's NMS only reports survivors, not whom they suppressed, and only
    for IoU. Memory is O(N): each keeper is compared with the remaining boxes only.
    """
    order = _rank_order(scores, partial)
    claimed = np.zeros(len(boxes), dtype=bool)
    clusters = []
    for pos, keeper in enumerate(order):
        if claimed[keeper]:
            continue
        rest = order[pos + 1 :]
        rest = rest[~claimed[rest]]
        overlap = pairwise_overlap(boxes[keeper : keeper + 1], boxes[rest], metric)[0]
        members = rest[overlap >= threshold]
        claimed[keeper] = True
        claimed[members] = True
        clusters.append(np.concatenate([[keeper], members]))
    return clusters


def nms(boxes, scores, labels, iou: float, *, metric: Metric = "iou", partial=None) -> Detections:
    """Class-aware non-maximum suppression: keep the best box of each overlapping group.

    With ``metric="iou"`` this is torchvision's ``batched_nms``; IoS needs the hand-written greedy
    pass. ``partial`` (bool [N]) makes full boxes win over partials regardless of score.
    """
    if metric == "iou":
        b, s, lab = as_detections(boxes, scores, labels)
        if len(b) == 0:
            return _empty()
        rank = s.astype(np.float64)
        if partial is not None:
            # Lift full boxes above every partial in the ranking; reported scores stay untouched.
            rank = rank + (~_np(partial, bool).reshape(-1)) * (rank.max() - rank.min() + 1.0)
        keep = batched_nms(torch.from_numpy(b).double(), torch.from_numpy(rank), torch.from_numpy(lab), iou)
        keep = keep.numpy()
        return Detections(b[keep], s[keep], lab[keep])

    def keep_keepers(b, s, part):
        keepers = [c[0] for c in greedy_clusters(b, s, iou, metric, part)]
        return b[keepers], s[keepers]

    return _by_class(boxes, scores, labels, partial, keep_keepers)


def greedy_nmm(
    boxes, scores, labels, threshold: float, metric: Metric = "iou", *, partial=None
) -> Detections:
    """Greedy non-maximum merging (as in SAHI): the best box absorbs the boxes overlapping it and
    becomes their enclosing box, with the highest score of the group."""

    def merge(b, s, part):
        clusters = greedy_clusters(b, s, threshold, metric, part)
        merged = np.stack([_enclosing(b[c]) for c in clusters])
        return merged, np.array([s[c].max() for c in clusters], np.float32)

    return _by_class(boxes, scores, labels, partial, merge)


def _enclosing(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])


def _fuse(boxes: np.ndarray, scores: np.ndarray, partial: np.ndarray | None) -> np.ndarray:
    """Fused box of one WBF cluster: the score-weighted mean of its full members; a cluster of
    partials only takes their enclosing box, since each piece saw a different part of the object."""
    if partial is not None:
        if partial.all():
            return _enclosing(boxes)
        boxes, scores = boxes[~partial], scores[~partial]
    weights = scores / max(float(scores.sum()), 1e-9)
    return (boxes * weights[:, None]).sum(0)


def weighted_box_fusion(
    boxes, scores, labels, iou: float, *, metric: Metric = "iou", partial=None
) -> Detections:
    """Weighted boxes fusion (Solovyev et al. 2019), written by hand as torchvision has none.

    Boxes are visited best first; each joins the existing cluster whose *fused* box it overlaps most
    (if ``> iou``) or starts a new one. A cluster's box is the score-weighted average of its members
    and its score the members' mean (the paper's rescaling by ``min(T, N) / T`` is 1 for one model).
    """

    def fuse_class(b, s, part):
        fused: list[np.ndarray] = []
        members: list[list[int]] = []
        for i in _rank_order(s, part):
            if fused:
                overlap = pairwise_overlap(b[i : i + 1], np.stack(fused), metric)[0]
                best = int(overlap.argmax())
                if overlap[best] > iou:
                    members[best].append(int(i))
                    m = members[best]
                    fused[best] = _fuse(b[m], s[m], None if part is None else part[m])
                    continue
            fused.append(b[i].copy())
            members.append([int(i)])
        return np.stack(fused), np.array([s[m].mean() for m in members], np.float32)

    return _by_class(boxes, scores, labels, partial, fuse_class)


# --------------------------------------------------------------------------------- tile borders


def partial_mask(
    boxes, window: Sequence[int], image_size: tuple[int, int], tolerance: float = 2.0
) -> np.ndarray:
    """Which boxes (full-image xyxy) touch an inner border of their tile ``window``, bool [N].

    A side of the window on the image border does not count: an object cut there is cut in every
    tile, so no other tile can do better.
    """
    b = _np(boxes, np.float32).reshape(-1, 4)
    x0, y0, x1, y1 = (float(v) for v in window)
    width, height = image_size
    cut_left = (x0 > 0) & (b[:, 0] <= x0 + tolerance)
    cut_top = (y0 > 0) & (b[:, 1] <= y0 + tolerance)
    cut_right = (x1 < width) & (b[:, 2] >= x1 - tolerance)
    cut_bottom = (y1 < height) & (b[:, 3] >= y1 - tolerance)
    return cut_left | cut_top | cut_right | cut_bottom


def absorb_partials(boxes, scores, labels, partial, threshold: float) -> tuple[Detections, np.ndarray]:
    """Drop partial boxes lying (by ``>= threshold`` of their own area) inside a full box of their class.

    Returns the remaining detections and their partial mask.
    """
    boxes, scores, labels = as_detections(boxes, scores, labels)
    partial = _np(partial, bool).reshape(-1)
    drop = np.zeros(len(boxes), dtype=bool)
    for label in np.unique(labels[partial]):
        pieces = np.flatnonzero(partial & (labels == label))
        whole = np.flatnonzero(~partial & (labels == label))
        if len(whole):
            inside = (
                box_intersection(boxes[pieces], boxes[whole])
                / np.maximum(box_area(boxes[pieces]), 1e-9)[:, None]
            )
            drop[pieces[inside.max(1) >= threshold]] = True  # inside: [P, F]
    return Detections(boxes[~drop], scores[~drop], labels[~drop]), partial[~drop]


def stitch_partials(boxes, scores, labels, partial, threshold: float) -> tuple[Detections, np.ndarray]:
    """Join partial boxes of one class that overlap by IoS ``>= threshold`` into their enclosing box.

    Pieces of one object cut by tile borders overlap only inside the tile overlap, so IoS (not IoU)
    is what recognises them. Joining is transitive (connected components), so an object spanning
    three tiles becomes one box. Returns the detections and their partial mask (stitched boxes stay
    partial: a full detection of the same object, if any, is still preferred).
    """
    boxes, scores, labels = as_detections(boxes, scores, labels)
    partial = _np(partial, bool).reshape(-1)
    out = [(boxes[~partial], scores[~partial], labels[~partial])]
    for label in np.unique(labels[partial]):
        idx = np.flatnonzero(partial & (labels == label))
        linked = pairwise_overlap(boxes[idx], boxes[idx], "ios") >= threshold  # [P, P]
        n, component = connected_components(linked, directed=False)
        groups = [idx[component == c] for c in range(n)]
        out.append(
            (
                np.stack([_enclosing(boxes[g]) for g in groups]).astype(np.float32),
                np.array([scores[g].max() for g in groups], np.float32),
                np.full(n, label, np.int64),
            )
        )
    stitched = Detections(*(np.concatenate(parts) for parts in zip(*out, strict=True)))
    new_partial = np.zeros(len(stitched), bool)
    new_partial[int((~partial).sum()) :] = True
    return stitched, new_partial


MergeMethod = Literal["nmm", "nms", "wbf"]


def merge_detections(
    boxes,
    scores,
    labels,
    *,
    partial=None,
    method: MergeMethod = "nmm",
    threshold: float = 0.5,
    metric: Metric = "ios",
) -> Detections:
    """Merge the detections of all tiles of one image (full-image coordinates) into one set.

    ``partial`` (bool [N], see :func:`partial_mask`) enables the tile-border rule of this module
    (absorb, stitch, then merge with full boxes first); without it the chosen method runs plainly.
    """
    if partial is not None and np.any(_np(partial, bool)):
        (boxes, scores, labels), partial = absorb_partials(boxes, scores, labels, partial, threshold)
        (boxes, scores, labels), partial = stitch_partials(boxes, scores, labels, partial, threshold)
    if method == "nmm":
        return greedy_nmm(boxes, scores, labels, threshold, metric, partial=partial)
    if method == "nms":
        return nms(boxes, scores, labels, threshold, metric=metric, partial=partial)
    if method == "wbf":
        return weighted_box_fusion(boxes, scores, labels, threshold, metric=metric, partial=partial)
    raise ValueError(f"merge method must be 'nmm', 'nms' or 'wbf', got {method!r}")


ENSEMBLE_IOU = 0.55  # the WBF paper's threshold for fusing the boxes of several models


def fuse_models(
    detections: Sequence[Detections], weights: Sequence[float], iou: float = ENSEMBLE_IOU
) -> Detections:
    """One image's detections from several models fused into one set by weighted box fusion.

    Each model's scores are scaled by its weight relative to the largest (equal weights: unchanged),
    then all boxes go through :func:`weighted_box_fusion` together (IoU, class-aware).
    """
    top = max(weights)
    boxes = np.concatenate([_np(d.boxes, np.float32).reshape(-1, 4) for d in detections])
    scores = np.concatenate(
        [_np(d.scores, np.float32) * (w / top) for d, w in zip(detections, weights, strict=True)]
    )
    labels = np.concatenate([_np(d.labels, np.int64) for d in detections])
    return merge_detections(boxes, scores, labels, method="wbf", threshold=iou, metric="iou")
