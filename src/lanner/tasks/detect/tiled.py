"""Detection on huge images: train on tile windows, validate and predict on full images, tile by tile.

Tiles are a view over the records (:mod:`lanner.data.tiling`): each training image is decoded once
and its windows are cut into an in-memory array at the training size; no tile file is written. An
epoch is one pass over every tile with objects plus a fresh sample of empty tiles. Validation,
evaluation and prediction run :func:`lanner.predict.tiled.predict_tiled` over the full images and
score boxes in full-image pixels against the original annotations.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from rich.console import Console
from torch import nn

from lanner._progress import progress_bar
from lanner.data.box_transforms import LetterboxCache, letterbox
from lanner.data.detections import Detections
from lanner.data.images import image_size
from lanner.data.records import Dataset, ImageRecord, Issue
from lanner.data.tiling import TileIndex, decode_upright, make_tiles, tile_windows
from lanner.engine.distributed import WHOLE, Part
from lanner.errors import ConfigError, DataError
from lanner.eval.detection import evaluate_detections
from lanner.predict.tiled import Tiling, predict_tiled
from lanner.predict.tta import fuse_views, unmirror
from lanner.tasks.detect.training import DetectionTask, nan_if_none


def resolve_tiling(saved: dict | None, tile: int | None = None, **overrides) -> Tiling | None:
    """The run's tiling with --tile/--overlap/--merge/... applied; ``tile=0`` (--no-tile) means whole images.

    A run trained without tiles can still be evaluated tiled by giving ``tile``.
    """
    if tile == 0:
        return None
    base = Tiling.from_dict(saved)
    if tile is None and base is None:
        return None
    values = base.to_dict() if base else {"tile": tile, "overlap": 0.2}
    if tile:
        values["tile"] = tile
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Tiling(**values)


# ------------------------------------------------------------------------------------ training data
def tile_records(dataset: Dataset, tiles: TileIndex) -> Dataset:
    """One record per tile, boxes in tile coordinates (what the training loop sees)."""
    records = []
    for t in tiles:
        x0, y0, x1, y1 = t.window
        src = dataset.records[t.record_index]
        records.append(
            ImageRecord(
                path=src.path,
                width=x1 - x0,
                height=y1 - y0,
                boxes=t.boxes,
                labels=t.labels,
                iscrowd=t.iscrowd,
                ignore=t.ignore,
                split="train",
            )
        )
    return Dataset(dataset.classes, records, "detect", dataset.root, dataset.format)


def cache_tiles(dataset: Dataset, tiles: TileIndex, size: int, console: Console) -> LetterboxCache:
    """Decode each image once and cut all its windows: [T, size, size, 3] uint8 in memory."""
    images = np.empty((len(tiles), size, size, 3), dtype=np.uint8)
    sizes = np.zeros((len(tiles), 2), dtype=np.int64)
    by_image: dict[int, list[int]] = {}
    for i, t in enumerate(tiles):
        by_image.setdefault(t.record_index, []).append(i)
    issues: list[Issue] = []
    with progress_bar("cutting tiles", len(by_image), console) as advance_to:
        for done, (record_index, tile_ids) in enumerate(by_image.items(), start=1):
            path = dataset.records[record_index].path
            try:
                img = decode_upright(path)
            except DataError as e:
                issues.append(Issue.unreadable(path, str(e)))
                continue
            for i in tile_ids:
                window = tiles[i].window
                images[i] = letterbox(img.crop(window), size)
                sizes[i] = (window[2] - window[0], window[3] - window[1])
            advance_to(done)
    return LetterboxCache(images, sizes, issues)


# ----------------------------------------------------------------------------------------- inference
@torch.no_grad()
def detect_stream(
    model: nn.Module,
    paths: list,
    tiling: Tiling,
    device: torch.device,
    score_threshold: float = 0.001,
    on_error=None,
    tta: bool = False,
):
    """``(path, Detections)`` in full-image pixels per readable image, in order, through tiled
    inference; unreadable images go to ``on_error(path, error)`` (raise when it is None). ``tta``: the
    image and its mirror image each tiled, their boxes fused by WBF (:mod:`lanner.predict.tta`)."""
    plain = _tiled_stream(model, paths, tiling, device, score_threshold, on_error)
    if not tta:
        yield from plain
        return
    mirrored = _tiled_stream(model, paths, tiling, device, score_threshold, on_error, mirror=True)
    for (path, det), (_, flipped) in zip(plain, mirrored, strict=True):
        (fused,) = fuse_views([[det], [unmirror(flipped, image_size(path)[0])]])
        yield path, fused


def _tiled_stream(model, paths, tiling: Tiling, device, score_threshold: float, on_error, mirror=False):
    offset = getattr(model, "label_offset", 0)
    was_training = model.training
    model.eval()
    try:
        tiling = tiling.for_device(model, device)
        stream = predict_tiled(
            model, paths, tiling, device=device, score_threshold=score_threshold, on_error=on_error,
            mirror=mirror,
        )  # fmt: skip
        for path, boxes, scores, labels in stream:
            yield path, Detections(boxes.astype(np.float64), scores.astype(np.float64), labels - offset)
    finally:
        model.train(was_training)


def detect_tiled(
    model: nn.Module,
    records: list[ImageRecord],
    tiling: Tiling,
    device: torch.device,
    score_threshold: float = 0.001,
    tta: bool = False,
) -> list[Detections]:
    """Full-image detections for each record, in record order, through tiled inference."""
    stream = detect_stream(model, [r.path for r in records], tiling, device, score_threshold, tta=tta)
    return [det for _, det in stream]


# --------------------------------------------------------------------------------------------- task
class TiledDetectionTask(DetectionTask):
    """DetectionTask over tiles; validation on the full validation images (mAP in full-image pixels)."""

    unit = "tiles"  # an epoch is one pass over the epoch's tiles, and the start-up line says so

    def __init__(self, *, tiles: TileIndex, full_val: Dataset, tiling: Tiling, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tiles, self.full_val, self.tiling = tiles, full_val, tiling
        self._readable = set(np.flatnonzero(self.cache.ok).tolist())

    @property
    def num_train_images(self) -> int:
        return self.tiles.epoch_size()

    @property
    def num_val_images(self) -> int:
        """Validation runs on whole images, tile by tile: its cost is their tile count."""
        return sum(self._val_tiles(r) for r in self.full_val.records)

    def _val_tiles(self, record: ImageRecord) -> int:
        if not (record.width and record.height):
            return 1  # size unknown: one tile's cost
        return len(tile_windows(record.width, record.height, self.tiling.tile, self.tiling.overlap))

    def sample_validation(self, keep: float) -> str | None:
        """Keep a seeded sample of the validation images holding about ``keep`` of their tiles."""
        records = self.full_val.records
        if keep >= 1 or len(records) < 2:
            return None
        order = np.random.default_rng(self.seed + 104_729).permutation(len(records))
        budget, chosen, tiles = keep * self.num_val_images, [], 0
        for i in order:
            cost = self._val_tiles(records[i])
            if chosen and tiles + cost > budget:
                break
            chosen.append(int(i))
            tiles += cost
        kept = [records[i] for i in sorted(chosen)]
        self.full_val = dataclasses.replace(self.full_val, records=kept)
        return (
            f"validation on {len(kept)} of {len(records)} val images (a seeded sample, {tiles} tiles): all "
            "of them would take more than a quarter of --time; `lanner eval` scores them all afterwards"
        )

    def steps_per_epoch(self) -> int:
        return math.ceil(self.tiles.epoch_size() / self.batch_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        chosen = np.array([i for i in self.tiles.epoch_indices(epoch, self.seed) if i in self._readable])
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return chosen[torch.randperm(len(chosen), generator=g).numpy()]

    def validate(self, model, part: Part = WHOLE) -> dict[str, float]:
        """mAP on the full validation images; with several processes each detects on its ``part``
        of the images and process 0 gathers and scores them (the others return {})."""
        if not self.full_val.records:
            return {}
        # The batch size is chosen once (a timed search on a GPU), not every epoch.
        self.tiling = self.tiling.for_device(model, self.device)
        mine = part.of(self.full_val.records)
        detections = part.gather(detect_tiled(model, mine, self.tiling, self.device))
        if not part.is_main:
            return {}
        metrics = evaluate_detections(self.full_val, detections, score_threshold=self.score_threshold)
        return {
            "val_map": nan_if_none(metrics["map"]),
            "val_map50": nan_if_none(metrics["map50"]),
            "val_map75": nan_if_none(metrics["map75"]),
        }

    def meta(self) -> dict:
        return {**super().meta(), "tiling": {**self.tiling.to_dict(), "batch_size": None}}


def build_tiled_task(
    config, dataset: Dataset, size: int, console: Console, **task_kwargs
) -> TiledDetectionTask:
    """Tile the training split, cut the tiles into memory, keep the validation split whole."""
    if size != config.tile:
        raise ConfigError(
            f"--image-size {size} differs from --tile {config.tile}: with tiling the model "
            "sees tiles at their own resolution; leave --image-size out"
        )
    train = dataset.subset("train")
    val = dataset.subset("val")
    tiles = make_tiles(
        train,
        config.tile,
        config.overlap,
        min_visibility=config.min_visibility,
        empty_ratio=config.empty_tile_ratio,
    )
    console.print(f"tiling {config.tile} px, overlap {config.overlap:g}: {tiles.describe()}")
    cache = cache_tiles(train, tiles, size, console)
    for issue in cache.issues:
        console.print(f"[yellow]skipped[/] {issue.path}: {issue.problem}")
    tiled = tile_records(train, tiles)
    tiling = Tiling(tile=config.tile, overlap=config.overlap)
    return TiledDetectionTask(
        tiles=tiles,
        full_val=val,
        tiling=tiling,
        cache=cache,
        dataset=tiled,
        train_idx=np.arange(len(tiles)),
        val_idx=np.zeros(0, dtype=np.int64),
        **task_kwargs,
    )
