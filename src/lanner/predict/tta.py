"""Test-time augmentation (``--tta`` on eval and predict): the model sees a few views of each image
and their outputs are combined.

Classification: the centre crop the model is normally shown, its mirror image, and the top-left and
bottom-right crops of the same cached square (the ``crop_pct`` margin, ~7% of a side); the softmax
probabilities of the views are averaged. Detection: the letterboxed image, its mirror image and the
image at :data:`DETECT_SCALES` of its size; each view's boxes are mapped back to the original image's
pixels, then all views are fused by weighted box fusion, as an ensemble's models are
(:func:`lanner.predict.merge.fuse_models`). Tiled detection tiles the image and its mirror image
(``predict_tiled(mirror=True)``) and fuses the two the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from lanner.data.box_transforms import FILL
from lanner.data.detections import Detections
from lanner.data.pixels import Preprocessing, centre_crop, normalise, to_float
from lanner.predict.merge import fuse_models

DETECT_SCALES = (0.75,)  # the content shrunk inside the same canvas (large objects seen whole)


# --------------------------------------------------------------------------------- classification
def classify_views(x: torch.Tensor, size: int, tta: bool) -> list[torch.Tensor]:
    """[B, 3, S', S'] squares -> the [B, 3, S, S] views shown: the centre crop, and with ``tta`` its
    mirror image and the top-left and bottom-right crops too."""
    centre = centre_crop(x, size)
    if not tta:
        return [centre]
    return [centre, centre.flip(-1), x[..., :size, :size], x[..., -size:, -size:]]


@torch.no_grad()
def class_probs(model, images_u8, prep: Preprocessing, device, tta: bool = False) -> torch.Tensor:
    """Cached squares [B, S', S', 3] uint8 -> [B, C] probabilities on the CPU: the centre crop's, or
    with ``tta`` the mean over :func:`classify_views`."""
    x = to_float(images_u8, device)
    views = classify_views(x, prep.image_size, tta)
    return torch.stack([model(normalise(v, prep)).float().softmax(1).cpu() for v in views]).mean(0)


# ---------------------------------------------------------------------------------------- detection
def content_sizes(sizes: np.ndarray, side: int) -> np.ndarray:
    """[N, 2] (width, height) of each image inside its letterboxed canvas of ``side`` px (as
    :func:`lanner.data.box_transforms.letterbox` rounds them)."""
    scale = side / sizes.max(1)
    return np.stack([np.clip(np.round(sizes[:, k] * scale), 1, side) for k in (0, 1)], 1).astype(int)


def mirror_canvases(canvases: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each canvas [S, S, 3] with its image content mirrored left-right in place (still top-left)."""
    out = canvases.copy()
    for canvas, (w, _) in zip(out, content_sizes(sizes, canvases.shape[1]), strict=True):
        canvas[:, :w] = canvas[:, :w][:, ::-1]
    return out


def unmirror(det: Detections, content_width: float) -> Detections:
    """Boxes found on the mirrored image, mapped back: x -> ``content_width`` - x (full-image pixels)."""
    boxes = np.asarray(det.boxes, dtype=np.float64).copy()
    boxes[:, [0, 2]] = content_width - boxes[:, [2, 0]]
    return Detections(boxes, det.scores, det.labels)


def shrink_canvases(canvases: np.ndarray, sizes: np.ndarray, factor: float) -> np.ndarray:
    """Each canvas's content resized by ``factor`` (< 1) on a fresh padded canvas of the same side."""
    side = canvases.shape[1]
    out = np.empty_like(canvases)
    out[:] = FILL
    for canvas, source, (w, h) in zip(out, canvases, content_sizes(sizes, side), strict=True):
        nw, nh = max(1, round(w * factor)), max(1, round(h * factor))
        small = Image.fromarray(source[:h, :w]).resize((nw, nh), Image.Resampling.BILINEAR)
        canvas[:nh, :nw] = np.asarray(small)
    return out


def detect_views(detect, canvases: np.ndarray, sizes: np.ndarray) -> list[list[Detections]]:
    """Each view's detections per image in original pixels; ``detect(canvases, sizes)`` is the model's
    own pass (boxes mapped by side / max(width, height) and clipped to (width, height))."""
    side = canvases.shape[1]
    widths = content_sizes(sizes, side)[:, 0] * sizes.max(1) / side  # the mirrored span, in image px
    mirrored = detect(mirror_canvases(canvases, sizes), sizes)
    views = [detect(canvases, sizes), [unmirror(d, w) for d, w in zip(mirrored, widths, strict=True)]]
    for factor in DETECT_SCALES:
        found = detect(shrink_canvases(canvases, sizes, factor), sizes / factor)  # scale side*f/max(w,h)
        views.append([_clip(d, wh) for d, wh in zip(found, sizes, strict=True)])
    return views


def _clip(det: Detections, size) -> Detections:
    boxes = np.asarray(det.boxes, dtype=np.float64).copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, float(size[0]))
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, float(size[1]))
    real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # past the edge: nothing left
    return Detections(boxes, det.scores, det.labels).take(real)


def fuse_views(views: list[list[Detections]]) -> list[Detections]:
    """Per image, the views' boxes fused by WBF (equal weights), as an ensemble's."""
    return [fuse_models(list(per_image), [1.0] * len(per_image)) for per_image in zip(*views, strict=True)]
