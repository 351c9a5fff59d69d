"""Tiling (slicing) huge images for detection: windows, per-tile targets and windowed reads.

Tiling is a *view* over dataset records: a tile is ``(record_index, window)`` plus the record's
annotations clipped to that window. No tile files are ever written to disk, so changing the tile
size or overlap costs nothing and the original dataset stays the single source of truth.

Windows are xyxy integer pixel boxes in the upright (EXIF-rotated) image, like record boxes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lanner.data.geometry import box_area
from lanner.data.images import _to_rgb, errors_name_the_file, image_size
from lanner.data.records import Dataset
from lanner.errors import ConfigError

Window = tuple[int, int, int, int]

EXIF_ORIENTATION = 0x0112
# The transpose that turns the stored (raw) pixels upright, per EXIF orientation value;
# the same table Pillow's ImageOps.exif_transpose uses.
_UPRIGHT_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


# --------------------------------------------------------------------------------------- windows


def overlap_pixels(tile: int, overlap: int | float) -> int:
    """Overlap in pixels: an int is pixels, a float in [0, 1) is a fraction of the tile size."""
    if tile < 1:
        raise ConfigError(f"tile size must be at least 1 pixel, got {tile}")
    if isinstance(overlap, float) and not overlap.is_integer():
        if not 0.0 <= overlap < 1.0:
            raise ConfigError(f"a fractional tile overlap must be in [0, 1), got {overlap}")
        pixels = int(round(overlap * tile))
    else:
        pixels = int(overlap)
    if not 0 <= pixels < tile:
        raise ConfigError(f"tile overlap must be smaller than the tile ({tile} px), got {pixels} px")
    return pixels


def _axis_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets along one axis; the last window is shifted inward to end at the border."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # always > the previous start, since range() stops before it
    return starts


def tile_windows(width: int, height: int, tile: int, overlap: int | float) -> np.ndarray:
    """Windows covering a ``width`` x ``height`` image, as an int64 array [T, 4] of xyxy pixels.

    Consecutive windows overlap by at least ``overlap``; the last row and column are shifted inward
    (overlapping more) rather than leaving the image or being padded. An image side not larger than
    the tile gets a single window of that side's full length, so small images pass through whole.
    """
    stride = tile - overlap_pixels(tile, overlap)
    xs = _axis_starts(int(width), tile, stride)
    ys = _axis_starts(int(height), tile, stride)
    tw, th = min(tile, int(width)), min(tile, int(height))
    windows = [(x, y, x + tw, y + th) for y in ys for x in xs]  # row-major: reading order
    return np.asarray(windows, dtype=np.int64).reshape(-1, 4)


# ---------------------------------------------------------------------------------- tile targets


@dataclass(frozen=True)
class Tile:
    """One window of one record, with that record's annotations clipped to the window.

    ``boxes`` and ``ignore`` are relative to the window's top-left corner, i.e. in the pixel
    coordinates of the cropped tile, which is what a detector trained on tiles sees.
    """

    record_index: int
    window: Window  # xyxy in the upright full image
    boxes: np.ndarray  # [N, 4] float32 xyxy, tile coordinates
    labels: np.ndarray  # [N] int64
    iscrowd: np.ndarray  # [N] bool
    ignore: np.ndarray  # [M, 4] float32 xyxy, tile coordinates

    @property
    def is_empty(self) -> bool:
        """No object to learn from (ignore regions alone do not count)."""
        return len(self.boxes) == 0


def _clip_to_window(boxes: np.ndarray, window: Window) -> np.ndarray:
    """Boxes [N, 4] clipped to the window and shifted into tile coordinates."""
    x0, y0, x1, y1 = window
    clipped = boxes.astype(np.float32, copy=True)
    clipped[:, [0, 2]] = np.clip(clipped[:, [0, 2]], x0, x1) - x0
    clipped[:, [1, 3]] = np.clip(clipped[:, [1, 3]], y0, y1) - y0
    return clipped


def clip_targets(
    boxes: np.ndarray,
    labels: np.ndarray,
    iscrowd: np.ndarray,
    ignore: np.ndarray,
    window: Window,
    *,
    min_visibility: float = 0.5,
    cut_to_ignore: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Annotations of one window: ``(boxes, labels, iscrowd, ignore)`` in tile coordinates.

    A box is kept when at least ``min_visibility`` of its area lies inside the window. A box that
    is visible but cut below that fraction becomes an ignore region (with ``cut_to_ignore``): the
    model should neither be rewarded nor punished for firing on a sliver of an object.
    """
    clipped = _clip_to_window(boxes, window)
    full_area = box_area(boxes.astype(np.float32))
    visible_area = box_area(clipped)
    visible = visible_area > 0
    keep = visible & (visible_area >= min_visibility * full_area)
    regions = _clip_to_window(ignore, window)
    regions = regions[box_area(regions) > 0]
    if cut_to_ignore:
        regions = np.concatenate([regions, clipped[visible & ~keep]]).astype(np.float32)
    return clipped[keep], labels[keep], iscrowd[keep], regions.reshape(-1, 4)


class TileIndex:
    """All tiles of a dataset, and the per-epoch sample of them.

    Empty tiles (no boxes) usually far outnumber tiles with objects on huge images, so each epoch
    keeps every non-empty tile and a fresh random ``empty_ratio`` x (#non-empty) of the empty ones;
    ``empty_ratio=None`` keeps them all. An epoch is one pass over :meth:`epoch_tiles`.
    """

    def __init__(self, tiles: list[Tile], *, num_images: int, empty_ratio: float | None = 0.5):
        if empty_ratio is not None and empty_ratio < 0:
            raise ConfigError(f"empty_ratio must be >= 0 (or None for all empty tiles), got {empty_ratio}")
        self.tiles = tiles
        self.num_images = num_images
        self.empty_ratio = empty_ratio
        self._non_empty = [i for i, t in enumerate(tiles) if not t.is_empty]
        self._empty = [i for i, t in enumerate(tiles) if t.is_empty]

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    def __getitem__(self, i: int) -> Tile:
        return self.tiles[i]

    @property
    def num_empty(self) -> int:
        return len(self._empty)

    @property
    def num_non_empty(self) -> int:
        return len(self._non_empty)

    def empty_per_epoch(self) -> int:
        """How many empty tiles each epoch samples."""
        if self.empty_ratio is None or not self._non_empty:
            # Nothing to balance against (or asked for all): an epoch must not be empty.
            return self.num_empty
        return min(self.num_empty, int(round(self.empty_ratio * self.num_non_empty)))

    def epoch_size(self) -> int:
        return self.num_non_empty + self.empty_per_epoch()

    def epoch_indices(self, epoch: int, seed: int = 0) -> list[int]:
        """Indices of the tiles of one epoch, in index order (shuffling is the data loader's job).

        The empty-tile sample depends only on ``(seed, epoch)``, so runs are reproducible and every
        epoch sees different background.
        """
        rng = np.random.default_rng([seed, epoch])
        picked = rng.choice(self._empty, size=self.empty_per_epoch(), replace=False) if self._empty else []
        return sorted(self._non_empty + [int(i) for i in picked])

    def epoch_tiles(self, epoch: int, seed: int = 0) -> list[Tile]:
        return [self.tiles[i] for i in self.epoch_indices(epoch, seed)]

    def describe(self) -> str:
        """One line for the training log, e.g. how big an epoch is."""
        return (
            f"{len(self)} tiles from {self.num_images} images: {self.num_non_empty} with objects, "
            f"{self.num_empty} empty ({self.empty_per_epoch()} sampled per epoch); "
            f"{self.epoch_size()} tiles per epoch"
        )


def make_tiles(
    dataset: Dataset,
    tile: int,
    overlap: int | float,
    *,
    min_visibility: float = 0.5,
    empty_ratio: float | None = 0.5,
    cut_to_ignore: bool = True,
) -> TileIndex:
    """Tile every record of a detection dataset (see :func:`tile_windows` and :func:`clip_targets`).

    Records without a known size get it from the image header (no decode).
    """
    if not 0.0 < min_visibility <= 1.0:
        raise ConfigError(f"min_visibility must be in (0, 1], got {min_visibility}")
    tiles: list[Tile] = []
    for index, rec in enumerate(dataset.records):
        if rec.width is None or rec.height is None:
            width, height = image_size(rec.path)
        else:
            width, height = rec.width, rec.height
        for row in tile_windows(width, height, tile, overlap):
            window = tuple(int(v) for v in row)
            boxes, labels, iscrowd, ignore = clip_targets(
                rec.boxes, rec.labels, rec.iscrowd, rec.ignore, window,
                min_visibility=min_visibility, cut_to_ignore=cut_to_ignore,
            )  # fmt: skip
            tiles.append(Tile(index, window, boxes, labels, iscrowd, ignore))
    return TileIndex(tiles, num_images=len(dataset.records), empty_ratio=empty_ratio)


# ------------------------------------------------------------------------------- windowed reads


@contextlib.contextmanager
def opened_image(path: str | Path) -> Iterator[Image.Image]:
    """``Image.open`` (lazy: header only) with every failure turned into a :class:`DataError`."""
    path = Path(path)
    with errors_name_the_file(path), Image.open(path) as img:
        yield img


def decode_upright(path: str | Path | Image.Image) -> Image.Image:
    """Decode a whole image once, upright and 8-bit RGB, without any avoidable full-size copy.

    Unlike :func:`lanner.data.images.open_image` (whose ``exif_transpose`` copies the image even
    when it is already upright), an upright RGB file costs exactly one decoded buffer; rotation and
    mode conversion add one transient copy only when the file needs them.
    """
    if isinstance(path, Image.Image):  # an image in memory (lanner.load(RUN).predict), already upright
        return _to_rgb(path)
    path = Path(path)
    with errors_name_the_file(path):
        img = Image.open(path)  # no context manager: closing would free the pixels we return
        try:
            img.load()  # Pillow closes the file itself once a single-frame image is loaded
            orientation = img.getexif().get(EXIF_ORIENTATION, 1)
            if orientation in _UPRIGHT_TRANSPOSE:
                img = img.transpose(_UPRIGHT_TRANSPOSE[orientation])
            return _to_rgb(img)
        except BaseException:
            img.close()
            raise


def upright_to_raw(window: Window, orientation: int, raw_size: tuple[int, int]) -> Window:
    """Map a window of the upright image onto the stored (pre-EXIF-rotation) pixels."""
    x0, y0, x1, y1 = window
    w, h = raw_size
    mapping = {
        1: (x0, y0, x1, y1),
        2: (w - x1, y0, w - x0, y1),
        3: (w - x1, h - y1, w - x0, h - y0),
        4: (x0, h - y1, x1, h - y0),
        5: (y0, x0, y1, x1),
        6: (y0, h - x1, y1, h - x0),
        7: (w - y1, h - x1, w - y0, h - x0),
        8: (w - y1, x0, w - y0, x1),
    }
    return mapping.get(orientation, mapping[1])


def read_window(path: str | Path, window: Window) -> Image.Image:
    """The 8-bit RGB pixels of one window of the upright image.

    Only the window is rotated and converted: the crop happens on the stored pixels, so no
    full-size rotated, RGB or float copy is ever made. (Pillow still decodes the whole file for
    most formats; callers reading many windows of one image should decode once and crop.)
    """
    with opened_image(path) as img:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        crop = img.crop(upright_to_raw(tuple(int(v) for v in window), orientation, img.size))
    if orientation in _UPRIGHT_TRANSPOSE:
        crop = crop.transpose(_UPRIGHT_TRANSPOSE[orientation])
    return _to_rgb(crop)


def read_downscaled(path: str | Path, max_side: int) -> Image.Image:
    """The upright image as 8-bit RGB with its longer side at most ``max_side`` pixels.

    For JPEG, Pillow's ``draft`` lets libjpeg decode directly at 1/2, 1/4 or 1/8 scale, so a
    10,000 px photo never exists in memory at full resolution. Scale factors back to the original
    are ``original_size / returned.size`` (take the original from :func:`image_size`).
    """
    with opened_image(path) as img:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        scale = max_side / max(img.size)
        if scale < 1.0:
            target = (max(1, math.floor(img.width * scale)), max(1, math.floor(img.height * scale)))
            img.draft("RGB", target)  # no-op for formats other than JPEG; never below target
            small = img.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
        else:
            small = img.copy()
    if orientation in _UPRIGHT_TRANSPOSE:
        small = small.transpose(_UPRIGHT_TRANSPOSE[orientation])
    return _to_rgb(small)
