"""Everything a detection run from a shard folder needs before the first step (mirrors
:mod:`lanner.tasks.classify.stream_setup` and the cached :func:`prepare_detection`)."""

from __future__ import annotations

import torch
from rich.console import Console

from lanner._io import write_json
from lanner.config import TrainConfig
from lanner.data.shard_index import ShardIndex, read_index
from lanner.errors import ConfigError
from lanner.models.transfer import Classes
from lanner.rundir import RunDir
from lanner.tasks.base import Prepared, TrainRecipe
from lanner.tasks.detect.setup import DEFAULT_BATCH, build_detector, default_model, weights_normalization
from lanner.tasks.detect.stream import StreamedDetectionTask
from lanner.tasks.pretrained import start_from, weights_data_cfg, weights_source
from lanner.tasks.streaming import STREAM_WORKERS, check_usable, shard_summary


def prepare_streamed_detection(
    config: TrainConfig, run: RunDir, device: torch.device, console: Console, fresh: bool
) -> Prepared:
    index = read_index(config.data)
    check_usable(index, config, "detect")
    _check_detection_options(index, config)
    name = config.model or default_model(device)[0]
    size = index.image_size  # the canvases are stored at the training size: no other size is possible
    model = build_detector(name, len(index.classes), size)
    source = weights_source(config, model, fresh)
    if fresh:
        write_json(run.data_check, shard_summary(index, config.data))
    batch = config.batch_size or DEFAULT_BATCH["cuda" if device.type == "cuda" else "cpu"]
    workers = config.workers or STREAM_WORKERS
    label_offset = getattr(model, "label_offset", 0)
    task = StreamedDetectionTask(
        index=index, source=config.data, recipe=TrainRecipe.from_config(config, batch),
        score_threshold=config.score_threshold, label_offset=label_offset, device=device, workers=workers,
    )  # fmt: skip
    notes = [
        f"data: {config.data} (shards, streamed by {workers} loader worker(s) per process), "
        f"{len(index.classes)} classes, {task.num_train_images} train / {task.num_val_images} val images",
        f"model: {name}{'' if config.model else ' (default for ' + device.type + ')'} at {size} px"
        + ("" if config.pretrained else ", random init"),
    ]
    task.normalize = norm = weights_normalization(model, weights_data_cfg(source, run))
    if norm:
        notes.append(f"inputs normalised as the weights expect: mean {norm['mean']}, std {norm['std']}")
    if source is not None:
        start_from(source, model, Classes(list(index.classes), {}, label_offset), run, console)
    return Prepared(task, model.to(device), name, batch, notes)


def _check_detection_options(index: ShardIndex, config: TrainConfig) -> None:
    if config.tile:
        raise ConfigError(
            f"--tile {config.tile}: tiled training cuts tiles from the full-resolution images, and the "
            f"shards hold them shrunk to {index.stored_size} px canvases; train tiled on the dataset "
            "itself (or write shards at a larger --image-size)"
        )
