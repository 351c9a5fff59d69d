"""Merging detections across tiles: NMS, greedy NMM, WBF and the tile-border (partial box) rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from lanner.predict.merge import (
    greedy_nmm,
    merge_detections,
    nms,
    pairwise_overlap,
    partial_mask,
    stitch_partials,
    weighted_box_fusion,
)


def _iou(a, b) -> float:
    return float(box_iou(torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32)))


def test_pairwise_overlap_iou_and_ios():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 5, 10], [20, 20, 30, 30]], np.float32)
    assert np.allclose(pairwise_overlap(a, b, "iou"), [[0.5, 0.0]])
    assert np.allclose(pairwise_overlap(a, b, "ios"), [[1.0, 0.0]])
    with pytest.raises(ValueError):
        pairwise_overlap(a, b, "giou")


BOXES = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
SCORES = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
LABELS = np.array([0, 0, 1, 0])


def test_nms_is_class_aware_and_accepts_tensors():
    as_tensors = (torch.from_numpy(BOXES), torch.from_numpy(SCORES), torch.from_numpy(LABELS))
    boxes, scores, labels = nms(*as_tensors, 0.5)
    assert scores.tolist() == pytest.approx([0.9, 0.7, 0.6])  # the class-1 twin survives
    assert labels.tolist() == [0, 1, 0]
    assert boxes.dtype == np.float32 and labels.dtype == np.int64


def test_nms_with_ios_suppresses_a_box_inside_another():
    boxes = np.array([[0, 0, 100, 100], [0, 0, 30, 100]], np.float32)
    assert len(nms(boxes, [0.9, 0.95], [0, 0], 0.5)) == 2  # IoU 0.3: both kept
    kept, scores, _ = nms(boxes, [0.9, 0.95], [0, 0], 0.5, metric="ios")
    assert scores.tolist() == pytest.approx([0.95])


def test_greedy_nmm_merges_into_the_enclosing_box_with_max_score():
    boxes, scores, labels = greedy_nmm(BOXES, SCORES, LABELS, 0.5)
    assert boxes.tolist()[0] == [0, 0, 11, 11] and scores[0] == pytest.approx(0.9)
    assert len(boxes) == 3 and sorted(labels.tolist()) == [0, 0, 1]


def test_wbf_averages_boxes_by_score_and_averages_scores():
    boxes = np.array([[0, 0, 10, 10], [2, 2, 12, 12], [100, 100, 110, 110]], np.float32)
    out_boxes, out_scores, _ = weighted_box_fusion(boxes, [0.75, 0.25, 0.5], [3, 3, 3], 0.4)
    assert out_boxes[0].tolist() == pytest.approx([0.5, 0.5, 10.5, 10.5])
    assert out_scores.tolist() == pytest.approx([0.5, 0.5])


def test_empty_input_gives_empty_output():
    for merge in (nms, greedy_nmm, weighted_box_fusion):
        boxes, scores, labels = merge(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0.5)
        assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)


def test_partial_mask_counts_inner_borders_only():
    image_size = (200, 100)
    # Window on the left image border: its left side is the image border, its right side is inner.
    boxes = np.array([[90, 20, 100, 60], [0, 20, 30, 60], [40, 20, 60, 60]], np.float32)
    assert partial_mask(boxes, (0, 0, 100, 100), image_size).tolist() == [True, False, False]
    # Window in the middle: both sides are inner; the top and bottom are the image border.
    boxes = np.array([[40, 20, 60, 60], [90, 0, 139, 100], [90, 20, 100, 60]], np.float32)
    assert partial_mask(boxes, (40, 0, 140, 100), image_size).tolist() == [True, True, False]


# An object straddling the border between tiles A and B (no overlap between them), seen whole by
# tile C that overlaps both: two partial boxes plus one full box.
IMAGE = (200, 100)
WINDOWS = {"A": (0, 0, 100, 100), "B": (100, 0, 200, 100), "C": (50, 0, 150, 100)}
OBJECT = [80.0, 20.0, 120.0, 60.0]
DETECTIONS = {"A": [80, 20, 100, 60], "B": [100, 21, 120, 60], "C": [79, 20, 120, 61]}
SCORES_BY_TILE = {"A": 0.95, "B": 0.9, "C": 0.7}  # the partials even score higher


def _tile_detections(tiles):
    boxes = np.array([DETECTIONS[t] for t in tiles], np.float32)
    partial = np.concatenate([partial_mask(boxes[i : i + 1], WINDOWS[t], IMAGE) for i, t in enumerate(tiles)])
    return boxes, np.array([SCORES_BY_TILE[t] for t in tiles], np.float32), np.zeros(len(tiles)), partial


@pytest.mark.parametrize("method", ["nmm", "nms", "wbf"])
@pytest.mark.parametrize("metric", ["ios", "iou"])
def test_object_on_a_tile_border_ends_up_as_one_box(method, metric):
    boxes, scores, labels, partial = _tile_detections(["A", "B", "C"])
    assert partial.tolist() == [True, True, False]
    out_boxes, out_scores, _ = merge_detections(
        boxes, scores, labels, partial=partial, method=method, threshold=0.5, metric=metric
    )
    assert len(out_boxes) == 1
    assert _iou(out_boxes[0].tolist(), OBJECT) > 0.9


@pytest.mark.parametrize("method", ["nmm", "nms", "wbf"])
def test_partials_without_a_full_view_are_stitched_into_the_object(method):
    windows = [(0, 0, 110, 100), (90, 0, 200, 100)]  # 20 px overlap, neither sees the object whole
    boxes = np.array([[80, 20, 110, 60], [90, 21, 120, 60]], np.float32)
    partial = np.concatenate([partial_mask(boxes[i : i + 1], w, IMAGE) for i, w in enumerate(windows)])
    assert partial.all()
    scores, labels = [0.9, 0.8], [0, 0]
    out_boxes, _, _ = merge_detections(boxes, scores, labels, partial=partial, method=method, metric="iou")
    assert len(out_boxes) == 1 and _iou(out_boxes[0].tolist(), OBJECT) > 0.9


def test_stitching_chains_pieces_across_three_tiles_but_keeps_classes_apart():
    boxes = np.array([[700, 0, 1024, 50], [768, 0, 1600, 50], [1536, 0, 1600, 50], [768, 0, 1000, 50]])
    labels = np.array([0, 0, 0, 1])
    (out, scores, out_labels), partial = stitch_partials(boxes, np.ones(4), labels, np.ones(4, bool), 0.5)
    assert sorted(map(tuple, out.tolist())) == [(700, 0, 1600, 50), (768, 0, 1000, 50)]
    assert partial.all()


def test_without_the_partial_rule_the_cut_box_is_double_counted():
    """Why the rule exists: plain IoU-NMS keeps both the partial and the full box."""
    boxes, scores, labels, _ = _tile_detections(["A", "C"])
    assert len(merge_detections(boxes, scores, labels, method="nms", metric="iou")) == 2


def test_separate_objects_stay_separate():
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [0, 0, 10, 10]], np.float32)
    for method in ("nmm", "nms", "wbf"):
        out, _, labels = merge_detections(boxes, [0.9, 0.8, 0.7], [0, 0, 1], method=method)
        assert len(out) == 3, method
