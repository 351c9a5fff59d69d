"""Streaming tiled (sliced) inference for detectors on images far larger than their input size.

Each image is decoded once, cut into overlapping windows (:func:`lanner.data.tiling.tile_windows`)
and the tiles of consecutive images stream through the model in fixed-size batches. Decoding runs
in a background thread (Pillow releases the GIL while decoding), so the next image is being read
while the model works on the current one. Only tiles ever become float tensors: a 10,000 x 10,000
photo costs its 8-bit decode, never a 1.2 GB float copy. Per-tile detections are mapped back to
full-image coordinates and merged across tile borders (:mod:`lanner.predict.merge`).

The model is torchvision-style: ``model(list of [3, H, W] float tensors in 0..1)`` returns one dict
per image with ``boxes`` (xyxy pixels of that input), ``scores`` and ``labels``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from lanner.data.tiling import decode_upright, tile_windows
from lanner.errors import DataError
from lanner.predict.merge import MergeMethod, Metric, merge_detections, partial_mask

T = TypeVar("T")
Prediction = tuple[Any, np.ndarray, np.ndarray, np.ndarray]  # (image, boxes [K,4], scores [K], labels [K])


@dataclass
class _ImageJob:
    """Bookkeeping for one image while its pieces are in flight."""

    path: Any
    size: tuple[int, int]  # (width, height) of the upright image
    num_pieces: int
    done: int = 0
    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    partial: list[np.ndarray] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.done == self.num_pieces


@dataclass
class _Piece:
    """One model input: a tile, or the whole image downscaled for the optional full-image pass."""

    job: _ImageJob
    pixels: torch.Tensor  # [h, w, 3] uint8
    window: tuple[int, int, int, int] | None  # None for the full-image pass
    scale: tuple[float, float] = (1.0, 1.0)  # full-image pixels per input pixel, (x, y)


# ------------------------------------------------------------------------------------ decoding


def _uint8_tensor(img: Image.Image) -> torch.Tensor:
    """[h, w, 3] uint8 copy of a (small) RGB image; np.array copies so the tensor is writable."""
    return torch.from_numpy(np.array(img, dtype=np.uint8))


def _downscaled(img: Image.Image, max_side: int) -> Image.Image:
    scale = max_side / max(img.size)
    if scale >= 1.0:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    # reducing_gap: box-reduce by an integer factor first (fast, antialiased), then resample.
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _pieces(
    images: Iterable[Any],
    tile: int,
    overlap: int | float,
    full_image_size: int | None,
    on_error: Callable[[Any, DataError], None] | None = None,
    mirror: bool = False,
) -> Iterator[_Piece]:
    """Decode each image once (``mirror``: mirrored left-right) and cut it into pieces; runs in the
    decoder thread."""
    for path in images:
        # 8-bit, upright RGB; DataError (naming the file, and --max-image-pixels for bombs) if not.
        try:
            img = decode_upright(path)
        except DataError as e:
            if on_error is None:
                raise
            on_error(path, e)  # reported, and the stream goes on with the next image
            continue
        img = ImageOps.mirror(img) if mirror else img
        width, height = img.size
        windows = tile_windows(width, height, tile, overlap)
        full_pass = full_image_size is not None and len(windows) > 1
        job = _ImageJob(path, (width, height), len(windows) + int(full_pass))
        for row in windows:
            window = tuple(int(v) for v in row)
            # Cropping copies only the window out of Pillow's buffer: no full-size array is made.
            yield _Piece(job, _uint8_tensor(img.crop(window)), window)
        if full_pass:
            small = _downscaled(img, full_image_size)
            yield _Piece(job, _uint8_tensor(small), None, (width / small.width, height / small.height))
        del img  # free the decode before the next image is read


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()


def prefetch(items: Iterator[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    The bounded queue is what keeps memory bounded: the producer blocks once it is ``depth`` items
    ahead. Errors in the producer are re-raised in the consumer; closing the consumer stops it.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # handed over to the consumer thread
            put(_Failed(e))

    thread = threading.Thread(target=produce, name="lanner-tile-decoder", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


# ------------------------------------------------------------------------------------- inference
@contextmanager
def score_floor(model: torch.nn.Module, threshold: float) -> Iterator[None]:
    """Let the model itself drop candidates scoring below ``threshold`` while inside the block.

    A detector decodes and NMSes every candidate above its own ``score_thresh`` (0.01 for lanner's
    FCOS); most are thrown away afterwards when the caller keeps only confident boxes. Raising the
    model's threshold to the caller's gives the same boxes above it (a lower-scoring box never
    suppresses a higher one in NMS) and cut post-processing from 5.1 to 0.2 ms per 256 px tile at
    score 0.25 here. Only ever raised, restored on exit; models without ``score_thresh`` are untouched.
    """
    owners = [model, getattr(model, "roi_heads", None)]  # Faster R-CNN keeps it in its ROI heads
    owners = [o for o in owners if isinstance(getattr(o, "score_thresh", None), float)]
    saved = [o.score_thresh for o in owners]
    # Slightly below: torchvision keeps scores strictly above its threshold, callers keep >= theirs.
    floor = threshold - 1e-6
    try:
        for owner, old in zip(owners, saved, strict=True):
            owner.score_thresh = max(old, floor)
        yield
    finally:
        for owner, old in zip(owners, saved, strict=True):
            owner.score_thresh = old


def _to_inputs(batch: Sequence[_Piece], device: torch.device, transform: Callable | None) -> list:
    inputs = []
    for piece in batch:
        # uint8 travels to the device (4x less than float), converts there: [h, w, 3] -> [3, h, w].
        x = piece.pixels.to(device, non_blocking=True).permute(2, 0, 1).float().div_(255.0)
        inputs.append(transform(x) if transform is not None else x)
    return inputs


def _record(piece: _Piece, output: dict, score_threshold: float) -> None:
    """Map one piece's detections into full-image coordinates and file them with its image."""
    scores = output["scores"].detach().float().cpu().numpy()
    keep = scores >= score_threshold
    boxes = output["boxes"].detach().float().cpu().numpy()[keep].reshape(-1, 4)
    sx, sy = piece.scale
    x0, y0 = (piece.window[0], piece.window[1]) if piece.window is not None else (0, 0)
    boxes = boxes * np.array([sx, sy, sx, sy], np.float32) + np.array([x0, y0, x0, y0], np.float32)
    job = piece.job
    if piece.window is None:
        partial = np.zeros(len(boxes), dtype=bool)  # the full-image pass cuts nothing
    else:
        partial = partial_mask(boxes, piece.window, job.size)
    job.boxes.append(boxes)
    job.scores.append(scores[keep])
    job.labels.append(output["labels"].detach().cpu().numpy()[keep].astype(np.int64))
    job.partial.append(partial)
    job.done += 1


def _run_batch(model, batch: list[_Piece], device, transform, score_threshold: float) -> None:
    with torch.inference_mode():
        outputs = model(_to_inputs(batch, device, transform))
    for piece, output in zip(batch, outputs, strict=True):
        _record(piece, output, score_threshold)


def _merged(job: _ImageJob, method: MergeMethod, threshold: float, metric: Metric) -> Prediction:
    boxes = np.concatenate(job.boxes).astype(np.float32)
    scores = np.concatenate(job.scores).astype(np.float32)
    labels = np.concatenate(job.labels)
    if job.num_pieces > 1:  # a single piece was already de-duplicated by the model itself
        partial = np.concatenate(job.partial)
        boxes, scores, labels = merge_detections(
            boxes, scores, labels, partial=partial, method=method, threshold=threshold, metric=metric
        )
    width, height = job.size
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return job.path, boxes, scores, labels


CPU_TILE_BATCH = 4


@dataclass(frozen=True)
class Tiling:
    """How a run cuts images: stored in the checkpoint so eval/predict tile the same way by default."""

    tile: int
    overlap: float
    # nms, nmm (greedy non-maximum merging) or wbf (weighted box fusion). NMS by default: mAP is
    # computed down to score 0.001, where NMM chains low-score boxes into huge ones (measured in
    # benchmarks/tiled_vs_sahi.py: mAP@.5 0.27 with NMS vs 0.001 with NMM at score >= 0.01).
    merge: str = "nms"
    merge_threshold: float = 0.5
    metric: str = "ios"  # overlap measure for merging: iou or ios (intersection over the smaller box)
    # Tiles per model call: a property of the device, not of the run (None: see for_device).
    batch_size: int | None = None
    full_image_pass: bool = False  # also run the whole image downscaled, for objects larger than a tile
    full_image_size: int | None = None  # that pass's longer side (default: the tile size)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict | None) -> Tiling | None:
        # A saved batch size (older runs) described the training machine, not this one: dropped.
        return cls(**{k: v for k, v in d.items() if k != "batch_size"}) if d else None

    def for_device(self, model: nn.Module, device: torch.device) -> Tiling:
        """This tiling with its batch size set for ``device`` (kept when given)."""
        if self.batch_size is not None:
            return self
        return replace(self, batch_size=tile_batch_size(model, self.tile, device))


def tile_batch_size(model: nn.Module, tile: int, device: torch.device) -> int:
    """Tiles per model call: 4 on a CPU, where batches beyond 4 gain nothing (benchmarks/tiled_vs_sahi.py);
    on a GPU the fastest per tile of 8..64, timed once on random tiles."""
    if device.type != "cuda":
        return CPU_TILE_BATCH
    return choose_batch_size(model, tile, device, candidates=(8, 16, 32, 64))


def predict_tiled(
    model: torch.nn.Module,
    images: Iterable[str | Path],
    tiling: Tiling,
    *,
    device: str | torch.device = "cpu",
    score_threshold: float = 0.0,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    on_error: Callable[[Any, DataError], None] | None = None,
    mirror: bool = False,
) -> Iterator[Prediction]:
    """Detect objects on images of any size, yielding ``(image, boxes, scores, labels)`` per image.
    ``mirror``: on the images mirrored left-right (test-time augmentation), boxes in mirrored pixels.

    ``tiling`` says how: tile size, overlap, tiles per batch (None: 4), merging, the full-image pass.
    Boxes are float32 [K, 4] xyxy in pixels of the full upright image, in input order. Tiles of
    consecutive images share batches of exactly ``batch_size`` (except the last), so results do not
    depend on how the stream is cut. ``full_image_pass`` adds one input per multi-tile image: the
    whole image with its longer side at ``full_image_size`` (default: ``tile``), which catches
    objects too large for a tile; its boxes are scaled back and merged with the tiles'.
    ``transform`` is applied to each [3, h, w] float tile (e.g. normalisation) before the model.

    Merging (``merge``, ``merge_threshold``, ``metric``) follows
    :func:`lanner.predict.merge.merge_detections`, including its rule for boxes cut by tile borders;
    an image that fits in one tile is returned as the model saw it, unmerged. ``score_threshold``
    drops detections before merging, which also keeps merging cheap.

    An image that cannot be read raises :class:`DataError`, unless ``on_error(image, error)`` is
    given: then it is reported there (from the decoding thread) and skipped, and the stream goes on.
    """
    batch_size = CPU_TILE_BATCH if tiling.batch_size is None else tiling.batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = torch.device(device)
    model.eval()
    merging = (tiling.merge, tiling.merge_threshold, tiling.metric)
    full_size = (tiling.full_image_size or tiling.tile) if tiling.full_image_pass else None
    in_flight: deque[_ImageJob] = deque()  # images whose pieces are not all through the model yet
    batch: list[_Piece] = []
    # The raised floor holds while this generator is suspended too; it is restored when it ends.
    with score_floor(model, score_threshold):
        pieces = _pieces(images, tiling.tile, tiling.overlap, full_size, on_error, mirror)
        for piece in prefetch(pieces, depth=2 * batch_size):
            if not in_flight or in_flight[-1] is not piece.job:
                in_flight.append(piece.job)
            batch.append(piece)
            if len(batch) == batch_size:
                _run_batch(model, batch, device, transform, score_threshold)
                batch = []
                while in_flight and in_flight[0].finished:
                    yield _merged(in_flight.popleft(), *merging)
        if batch:
            _run_batch(model, batch, device, transform, score_threshold)
    while in_flight:
        yield _merged(in_flight.popleft(), *merging)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def choose_batch_size(
    model: torch.nn.Module,
    tile: int,
    device: str | torch.device = "cpu",
    *,
    candidates: Sequence[int] = (1, 2, 4, 8),
    budget_s: float = 10.0,
) -> int:
    """The candidate batch size with the best time per tile, timed once each on random tiles.

    Cheap by design: one warm-up call, then candidates in increasing order, stopping as soon as a
    batch is clearly slower per tile than the best so far (on CPU a small batch is often fastest),
    on running out of GPU memory, or when ``budget_s`` seconds have been spent.
    """
    device = torch.device(device)
    model.eval()
    x = torch.rand(3, tile, tile, device=device)
    best, best_per_tile = candidates[0], float("inf")
    started = time.perf_counter()
    with torch.inference_mode():
        model([x])  # warm-up: lazy init, allocator, cudnn autotuning
        for size in candidates:
            t0 = time.perf_counter()
            try:
                model([x] * size)
                _synchronize(device)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                break
            per_tile = (time.perf_counter() - t0) / size
            if per_tile < best_per_tile:
                best, best_per_tile = size, per_tile
            elif per_tile > 1.1 * best_per_tile:
                break
            if time.perf_counter() - started > budget_s:
                break
    return best
