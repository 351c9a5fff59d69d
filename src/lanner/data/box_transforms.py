"""Box-aware image geometry for detection: letterboxing, a letterboxed image cache, batch augmentation.

Every detection image (training, evaluation, prediction) is *letterboxed*: resized so its longer
side is ``size``, aspect kept, and pasted at the top-left of a ``size`` x ``size`` canvas filled
with the ImageNet mean colour (which the model's normalisation turns into zeros). With the image at
the top-left, going back to original pixels is a single division by ``scale = size / max(w, h)``.

Augmentation runs on whole batches of cached uint8 canvases, like classification's
(:func:`lanner.tasks.classify.augment_batch`): one ``roi_align`` call takes a random square window
from every canvas (zoom in = crop, zoom out = shrink with padding), boxes follow the same affine
map and are clipped with tiling's visibility rule, then colour jitter and horizontal flips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.ops import roi_align

from lanner.data.affine import is_identity, random_affines, warp_batch, warp_boxes
from lanner.data.cache import build_image_cache
from lanner.data.images import open_image
from lanner.data.pixels import to_float
from lanner.data.records import Issue
from lanner.data.tiling import clip_targets
from lanner.errors import DataError

FILL = (124, 116, 104)  # ImageNet mean as uint8: padding that normalises to ~0
LETTERBOX_CACHE_VERSION = 1
# zoom range (log-uniform; >1 crops in, <1 shrinks with padding) and colour jitter strength
AUGMENT_PRESETS = {
    "none": None,
    "light": ((0.8, 1.25), 0.1),
    "default": ((0.6, 1.6), 0.2),
    "strong": ((0.45, 2.2), 0.3),
}
MIN_BOX_SIDE = 2.0  # px at the training size: smaller boxes after a zoom-out are dropped


# ------------------------------------------------------------------------------------- letterbox
def letterbox_scale(width: int, height: int, size: int) -> float:
    return size / max(width, height)


def letterbox(img: Image.Image, size: int) -> np.ndarray:
    """An RGB image -> [size, size, 3] uint8: longer side to ``size``, top-left, mean-colour padding."""
    w, h = img.size
    scale = letterbox_scale(w, h, size)
    new_w, new_h = min(size, max(1, round(w * scale))), min(size, max(1, round(h * scale)))
    resized = np.asarray(
        img.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0), dtype=np.uint8
    )
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[:] = FILL
    canvas[:new_h, :new_w] = resized
    return canvas


def load_letterboxed(path: str | Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one file (upright, RGB) -> (canvas [size, size, 3] uint8, original (width, height))."""
    img = open_image(path)
    return letterbox(img, size), img.size


def _load_one(args: tuple[str, int]) -> tuple[np.ndarray | None, tuple[int, int], str | None]:
    path, size = args
    try:
        canvas, wh = load_letterboxed(path, size)
        return canvas, wh, None
    except DataError as e:
        return None, (0, 0), str(e)


@dataclass
class LetterboxCache:
    """Letterboxed canvases of a list of images; ``sizes[i] == (0, 0)`` marks an unreadable file."""

    images: np.ndarray  # [N, S, S, 3] uint8 (a memmap)
    sizes: np.ndarray  # [N, 2] int: original upright (width, height)
    issues: list[Issue]

    @property
    def ok(self) -> np.ndarray:
        return self.sizes[:, 0] > 0

    @property
    def scales(self) -> np.ndarray:
        """[N] letterbox scale of each image (0 for unreadable ones)."""
        side = self.images.shape[1]
        return np.where(self.ok, side / np.maximum(self.sizes.max(axis=1), 1), 0.0)


def build_letterbox_cache(
    paths: list[Path], size: int, cache_dir: Path, *, workers: int = 1, progress=None
) -> LetterboxCache:
    """Decode every image once into a letterboxed memmap (see :func:`lanner.data.cache.build_image_cache`).

    Letterboxed, not centre-cropped: a crop would cut boxes. The original sizes map boxes back.
    """
    images, sizes, issues = build_image_cache(
        paths, size, cache_dir, loader=_load_one, tag=f"letterbox{LETTERBOX_CACHE_VERSION}",
        workers=workers, progress=progress,
    )  # fmt: skip
    return LetterboxCache(images, sizes, issues)


# ------------------------------------------------------------------------------------ targets
@dataclass
class BoxTargets:
    """One image's training targets in the coordinates of its current canvas."""

    boxes: np.ndarray  # [N, 4] float32 xyxy
    labels: np.ndarray  # [N] int64


def scaled_targets(boxes: np.ndarray, labels: np.ndarray, iscrowd: np.ndarray, scale: float) -> BoxTargets:
    """Original-pixel annotations -> canvas coordinates. Crowd boxes are left out of training: they
    mark many objects at once and would teach the model one big box."""
    keep = ~np.asarray(iscrowd, dtype=bool) if len(iscrowd) == len(boxes) else np.ones(len(boxes), bool)
    return BoxTargets((boxes[keep] * scale).astype(np.float32), labels[keep].astype(np.int64))


def random_zoom_windows(n: int, side: int, zoom: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """[n, 4] square xyxy windows on a side x side canvas: log-uniform zoom, random placement.

    A window larger than the canvas (zoom < 1) may start left of / above it, so the image lands
    anywhere inside the output rather than always in the corner.
    """
    log_zoom = torch.empty(n).uniform_(math.log(zoom[0]), math.log(zoom[1]), generator=g)
    w = side / torch.exp(log_zoom)
    lo, hi = torch.minimum(side - w, torch.zeros(n)), torch.maximum(side - w, torch.zeros(n))
    x0 = lo + torch.rand(n, generator=g) * (hi - lo)
    y0 = lo + torch.rand(n, generator=g) * (hi - lo)
    return torch.stack([x0, y0, x0 + w, y0 + w], dim=1)


def window_targets(t: BoxTargets, window: np.ndarray, out_size: int, min_visibility: float) -> BoxTargets:
    """Targets of one canvas seen through ``window`` [4] and resized to ``out_size``."""
    no_flags, no_regions = np.zeros(len(t.boxes), bool), np.zeros((0, 4), np.float32)
    x0, y0, x1, y1 = (float(v) for v in window)
    boxes, labels, _, _ = clip_targets(
        t.boxes,
        t.labels,
        no_flags,
        no_regions,
        (x0, y0, x1, y1),
        min_visibility=min_visibility,
        cut_to_ignore=False,
    )
    boxes = boxes * (out_size / (x1 - x0))
    big = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIDE) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIDE)
    return BoxTargets(boxes[big].astype(np.float32), labels[big])


def warp_targets(t: BoxTargets, forward: np.ndarray, side: int, min_visibility: float) -> BoxTargets:
    """Targets moved by an affine ``forward`` [3, 3] (rotated boxes: their enclosing box), then clipped
    to the canvas; a box less visible than ``min_visibility`` is dropped."""
    moved = BoxTargets(warp_boxes(t.boxes, forward), t.labels)
    return window_targets(moved, np.array([0.0, 0.0, side, side]), side, min_visibility)


def hflip_targets(t: BoxTargets, width: int) -> BoxTargets:
    boxes = t.boxes.copy()
    boxes[:, [0, 2]] = width - t.boxes[:, [2, 0]]
    return BoxTargets(boxes, t.labels)


# ---------------------------------------------------------------------------------- augmentation
def colour_jitter(x: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """Per-image brightness, contrast and saturation in [1 - strength, 1 + strength]; x [B, 3, H, W] 0..1."""
    b = x.shape[0]

    def factor() -> torch.Tensor:  # drawn on the CPU (same numbers on any device), used on x's
        return (1 + (torch.rand(b, 1, 1, 1, generator=g) * 2 - 1) * strength).to(x.device)

    grey = x.mean(dim=1, keepdim=True)  # [B, 1, H, W]
    x = grey + (x - grey) * factor()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor() + mean
    return (x * factor()).clamp_(0, 1)


def augment_detection_batch(
    images_u8: np.ndarray,
    targets: list[BoxTargets],
    *,
    preset: str,
    hflip: bool,
    min_visibility: float,
    g: torch.Generator,
    device: torch.device | str = "cpu",
    geometry: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
) -> tuple[torch.Tensor, list[BoxTargets]]:
    """Cached canvases [B, S, S, 3] uint8 + canvas targets -> augmented [B, 3, S, S] floats 0..1 on
    ``device`` + targets. Random numbers come from ``g`` on the CPU, the pixel work runs on ``device``.
    ``geometry``: max rotation, shear (degrees), translation, scale (fractions), see data.affine."""
    x = to_float(images_u8, device)  # [B, 3, S, S]
    b, side = x.shape[0], x.shape[-1]
    setting = AUGMENT_PRESETS[preset]
    if setting is not None:
        zoom, jitter = setting
        windows = random_zoom_windows(b, side, zoom, g)  # [B, 4]
        rois = torch.cat([torch.arange(b, dtype=torch.float32)[:, None], windows], dim=1).to(x.device)
        # roi_align pads outside the canvas with 0: shift by the fill colour so padding stays mean grey.
        fill = torch.tensor(FILL, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) / 255.0
        x = (
            roi_align(x - fill, rois, output_size=side, spatial_scale=1.0, sampling_ratio=2, aligned=True)
            + fill
        )
        targets = [
            window_targets(t, w, side, min_visibility) for t, w in zip(targets, windows.numpy(), strict=True)
        ]
        if jitter > 0:
            x = colour_jitter(x, jitter, g)
    if not is_identity(geometry):
        forward = random_affines(b, side, geometry, g)  # [B, 3, 3]
        fill = torch.tensor(FILL, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) / 255.0
        x = warp_batch(x, forward, fill)
        targets = [
            warp_targets(t, m, side, min_visibility) for t, m in zip(targets, forward.numpy(), strict=True)
        ]
    if hflip:
        flip = torch.rand(b, generator=g) < 0.5  # [B] bool
        x[flip.to(x.device)] = x[flip.to(x.device)].flip(-1)
        targets = [hflip_targets(t, side) if f else t for t, f in zip(targets, flip.tolist(), strict=True)]
    return x, targets
