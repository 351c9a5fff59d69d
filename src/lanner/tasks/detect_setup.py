"""Everything a detection run needs before the first step, and detection's `lanner eval`.

Mirrors :mod:`lanner.tasks.classify_setup`: read and filter the data, draw or restore the
train/val split, decode the images once into a letterbox cache, build the detector from the
registry. Evaluation rebuilds the same letterboxed pixels for any split or dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from lanner._io import write_json
from lanner._progress import progress_bar
from lanner.config import TrainConfig
from lanner.data.box_transforms import LetterboxCache, build_letterbox_cache
from lanner.data.cache import default_cache_dir
from lanner.data.check import summarise
from lanner.data.formats import read_dataset
from lanner.data.records import Dataset, canonical_split
from lanner.data.split import apply_saved_split, split_for_run
from lanner.engine.setup import default_workers
from lanner.errors import DataError
from lanner.models.loading import LoadedRun
from lanner.models.registry import create_model, default_model, load_pretrained
from lanner.tasks.classify_setup import Prepared
from lanner.tasks.detect import DetectionTask, detect_canvases

DEFAULT_BATCH = {"cpu": 8, "cuda": 16}


# ------------------------------------------------------------------------------------- classes
def class_mapping(
    classes: list[str], keep: list[str] | None, rename: dict[str, str]
) -> tuple[list[str], dict]:
    """(new class names, old index -> new index) for ``--classes`` (keep only) and ``rename`` (merge)."""
    unknown = [c for c in (keep or []) + list(rename) if c not in classes]
    if unknown:
        raise DataError(f"class(es) {', '.join(unknown)} not in the data; it has: {', '.join(classes)}")
    kept = [c for c in classes if not keep or c in keep]
    new_names = sorted({rename.get(c, c) for c in kept})
    return new_names, {classes.index(c): new_names.index(rename.get(c, c)) for c in kept}


def relabel_boxes(dataset: Dataset, new_classes: list[str], to_new: dict[int, int]) -> Dataset:
    """Keep only boxes whose class is mapped, with their new label. Images left without boxes stay, as
    negatives: the dropped classes are background to this model, in training and in evaluation alike."""
    for r in dataset.records:
        keep = np.array([int(c) in to_new for c in r.labels], dtype=bool)  # [N]
        if len(r.iscrowd) == len(keep):
            r.iscrowd = r.iscrowd[keep]
        r.boxes = r.boxes[keep]
        r.labels = np.array([to_new[int(c)] for c in r.labels[keep]], dtype=np.int64)
    return Dataset(new_classes, dataset.records, "detect", dataset.root, dataset.format, dataset.issues)


def load_detection_data(config: TrainConfig) -> Dataset:
    dataset = read_dataset(config.data, config.format)
    if dataset.task != "detect":
        raise DataError(
            f"{config.data}: a {dataset.task} dataset ({dataset.format}); --task detect needs boxes"
        )
    if not config.classes and not config.rename:
        return dataset
    return relabel_boxes(dataset, *class_mapping(dataset.classes, config.classes, config.rename))


def onto_run_classes(dataset: Dataset, classes: list[str], console: Console) -> Dataset:
    """Re-index another dataset's boxes onto the run's classes by name; boxes of other classes are dropped."""
    to_run = {i: classes.index(c) for i, c in enumerate(dataset.classes) if c in classes}
    dropped = [c for c in dataset.classes if c not in classes]
    if not to_run:
        raise DataError(
            f"{dataset.root}: none of its classes ({', '.join(dataset.classes)}) is known to this "
            f"model (it knows: {', '.join(classes)})"
        )
    if dropped:
        console.print(
            f"[yellow]note[/]: class(es) {', '.join(dropped)} unknown to this model; their boxes are "
            "not evaluated"
        )
    return relabel_boxes(dataset, list(classes), to_run)


# ---------------------------------------------------------------------------------------- model
def build_detector(name: str, num_classes: int, image_size: int) -> nn.Module:
    return create_model("detect", name, num_classes=num_classes, image_size=image_size)


def build_detector_from_meta(name: str, meta: dict) -> nn.Module:
    return build_detector(name, len(meta["classes"]), int(meta["image_size"]))


def cache_dataset(
    dataset: Dataset, image_size: int, cache_dir: str | None, workers: int, console: Console
) -> LetterboxCache:
    """Decode the dataset's images once into a letterbox cache, with a progress bar."""
    with progress_bar("decoding images into cache", len(dataset.records), console) as advance_to:
        cache = build_letterbox_cache(
            [Path(r.path) for r in dataset.records], image_size,
            Path(cache_dir) if cache_dir else default_cache_dir(), workers=workers, progress=advance_to,
        )  # fmt: skip
    for issue in cache.issues:
        console.print(f"[yellow]skipped[/] {issue.path}: {issue.problem}")
    return cache


# ---------------------------------------------------------------------------------------- train
def describe_choices(
    config: TrainConfig,
    dataset: Dataset,
    train_idx: np.ndarray,
    num_val: int,
    split_drawn: bool,
    name: str,
    size: int,
    device: torch.device,
) -> list[str]:
    """What the run is about to train on and with, including the choices lanner made for the user."""
    negatives = sum(1 for i in train_idx if dataset.records[i].num_boxes == 0)
    boxes = sum(dataset.records[i].num_boxes for i in train_idx)
    drawn = f" (val split drawn: {config.val_fraction:.0%}, seed {config.seed}, saved in split.csv)"
    model_default = "" if config.model else f" (default for {device.type})"
    return [
        f"data: {config.data} ({dataset.format}), {len(dataset.classes)} classes, "
        f"{len(train_idx)} train images ({boxes} boxes, {negatives} without boxes, used as negatives) / "
        f"{num_val} val images" + (drawn if split_drawn else ""),
        f"model: {name}{model_default} at {size} px{'' if config.image_size else ' (default)'}"
        + ("" if config.pretrained else ", random init"),
    ]


def prepare_detection(
    config: TrainConfig, run_dir: Path, device: torch.device, console: Console, fresh: bool
) -> Prepared:
    dataset = load_detection_data(config)
    made = split_for_run(dataset, run_dir, config.val_fraction, config.seed, fresh)
    default_name, default_size = default_model("detect", device)
    name = config.model or default_name
    size = config.image_size or config.tile or default_size
    model = build_detector(name, len(dataset.classes), size)
    batch = config.batch_size or DEFAULT_BATCH["cuda" if device.type == "cuda" else "cpu"]
    task_kwargs = dict(
        batch_size=batch,
        augment=config.augment,
        hflip=config.hflip,
        min_visibility=config.min_visibility,
        score_threshold=config.score_threshold,
        label_offset=getattr(model, "label_offset", 0),
        seed=config.seed,
        device=device,
    )
    if config.tile:
        from lanner.tasks.detect_tiled import build_tiled_task

        task = build_tiled_task(config, dataset, size, console, **task_kwargs)
        if fresh:
            write_json(run_dir / "data_check.json", summarise(dataset, task.cache.issues))
        train_idx = np.flatnonzero(np.array([r.split == "train" for r in dataset.records]))
        val_idx = np.flatnonzero(np.array([r.split == "val" for r in dataset.records]))
    else:
        cache = cache_dataset(dataset, size, config.cache_dir, config.workers or default_workers(), console)
        if fresh:
            write_json(run_dir / "data_check.json", summarise(dataset, cache.issues))
        splits = np.array([r.split for r in dataset.records], dtype=object)
        train_idx = np.flatnonzero((splits == "train") & cache.ok)
        val_idx = np.flatnonzero((splits == "val") & cache.ok)
        task = DetectionTask(
            cache=cache, dataset=dataset, train_idx=train_idx, val_idx=val_idx, **task_kwargs
        )
    if len(train_idx) == 0:
        raise DataError(f"{config.data}: no readable training images")
    notes = describe_choices(config, dataset, train_idx, len(val_idx), made, name, size, device)
    if fresh and config.pretrained:
        fresh_layers = load_pretrained(model, config.pretrained)
        notes.append(f"weights from {config.pretrained}; new layers: {len(fresh_layers)}")
    return Prepared(task, model.to(device), name, batch, notes)


# ----------------------------------------------------------------------------------------- eval
def select_splits(dataset: Dataset, split: str | None) -> tuple[Dataset, str | None]:
    """``--split``: one name, several joined by commas or '+' (``val,test``), or None for the default."""
    if split is None:
        from lanner.eval.evaluate import default_split

        split = default_split(dataset)
        return dataset.subset(split), split
    names = [canonical_split(s.strip()) for s in split.replace("+", ",").split(",") if s.strip()]
    records = [r for r in dataset.records if r.split in names]
    return Dataset(
        dataset.classes, records, dataset.task, dataset.root, dataset.format, dataset.issues
    ), "+".join(names)


def load_detection_eval_data(
    loaded: LoadedRun, run_dir: Path, data: str | None, split: str | None, console: Console
) -> tuple[Dataset, str | None]:
    if data is None:
        dataset = load_detection_data(loaded.config)
        apply_saved_split(dataset, run_dir)
    else:
        dataset = onto_run_classes(read_dataset(data), loaded.classes, console)
    subset, split = select_splits(dataset, split)
    if not subset.records:
        raise DataError(
            f"{data or loaded.config.data}: no images in split {split!r} (splits: {dataset.splits})"
        )
    return subset, split


def predict_dataset(
    loaded: LoadedRun, dataset: Dataset, console: Console, tiling=None
) -> tuple[Dataset, list]:
    """Detections for every readable image of ``dataset`` (unreadable ones are dropped from it).

    With ``tiling`` the full images go through tiled inference; without, each image is letterboxed
    (downscaled) to the model's input size.
    """
    if tiling is not None:
        from lanner.tasks.detect_tiled import detect_tiled

        tiling = tiling.for_device(loaded.model, loaded.device)
        console.print(
            f"tiled inference: {tiling.tile} px tiles, overlap {tiling.overlap:g}, merge {tiling.merge}, "
            f"{tiling.batch_size} tiles per batch"
        )
        return dataset, detect_tiled(loaded.model, dataset.records, tiling, loaded.device)
    config = loaded.config
    cache = cache_dataset(
        dataset,
        int(loaded.meta["image_size"]),
        config.cache_dir,
        config.workers or default_workers(),
        console,
    )
    ok = np.flatnonzero(cache.ok)
    detections = detect_canvases(loaded.model, cache.images[ok], cache.sizes[ok], loaded.device)
    kept = Dataset(
        dataset.classes,
        [dataset.records[i] for i in ok],
        "detect",
        dataset.root,
        dataset.format,
        dataset.issues,
    )
    return kept, detections


def format_summary(metrics: dict) -> str:
    def fmt(v) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    lines = [
        f"mAP@.5:.95 {fmt(metrics['map'])}  mAP@.5 {fmt(metrics['map50'])}  mAP@.75 {fmt(metrics['map75'])}  "
        f"AR@100 {fmt(metrics['mar_100'])}",
        f"{'class':<20} {'AP':>7} {'AP50':>7} {'P':>7} {'R':>7} {'F1':>7} {'boxes':>7}   "
        f"(P/R/F1 at score >= {metrics['score_threshold']:g})",
    ]
    for name, c in metrics["per_class"].items():
        lines.append(
            f"{name:<20} {fmt(c.get('ap')):>7} {fmt(c.get('ap50')):>7} {fmt(c.get('precision')):>7} "
            f"{fmt(c.get('recall')):>7} {fmt(c.get('f1')):>7} {c.get('support', 0):>7}"
        )
    return "\n".join(lines)


def evaluate_detection_run(
    loaded: LoadedRun,
    run_dir: Path,
    data: str | None,
    split: str | None,
    console: Console,
    tile: int | None = None,
    **tiling_options,
) -> dict:
    """COCO metrics of a detection run; ``tile``/``overlap``/``merge``/... override its tiling."""
    from lanner.eval.detection import evaluate_detections, write_detection_outputs
    from lanner.tasks.detect_tiled import resolve_tiling

    dataset, split = load_detection_eval_data(loaded, run_dir, data, split, console)
    tiling = resolve_tiling(loaded.meta.get("tiling"), tile, **tiling_options)
    dataset, detections = predict_dataset(loaded, dataset, console, tiling)
    metrics = evaluate_detections(dataset, detections, score_threshold=loaded.config.score_threshold)
    metrics = {**metrics, "split": split, "tiling": tiling.to_dict() if tiling else None}
    write_detection_outputs(metrics, dataset, detections, run_dir / "eval")
    write_json(run_dir / "metrics.json", metrics)
    console.print(
        f"evaluation on split {split or 'all'} ({len(dataset.records)} images) with {loaded.checkpoint.name}:"
    )
    console.print(format_summary(metrics), markup=False, highlight=False)
    return metrics
