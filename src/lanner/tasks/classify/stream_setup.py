"""Everything a classification run from a shard folder needs before the first step."""

from __future__ import annotations

import torch
from rich.console import Console

from lanner._io import write_json
from lanner.config import TrainConfig
from lanner.data.pixels import Preprocessing
from lanner.data.shard_index import read_index
from lanner.errors import ConfigError
from lanner.models.classifiers import build_classifier
from lanner.models.transfer import Classes
from lanner.rundir import RunDir
from lanner.tasks.base import Prepared, TrainRecipe
from lanner.tasks.classify.setup import DEFAULT_BATCH, default_model, preprocessing_for
from lanner.tasks.classify.stream import StreamedClassificationTask
from lanner.tasks.pretrained import start_from, weights_data_cfg, weights_source
from lanner.tasks.streaming import STREAM_WORKERS, check_usable, shard_summary


def prepare_streamed_classification(
    config: TrainConfig, run: RunDir, device: torch.device, console: Console, fresh: bool
) -> Prepared:
    index = read_index(config.data)
    check_usable(index, config, "classify")
    name = config.model or default_model(device)[0]
    model, mean, std = build_classifier(name, len(index.classes))
    source = weights_source(config, model, fresh)
    default = Preprocessing(index.image_size, mean, std)
    prep = preprocessing_for(default, weights_data_cfg(source, run), index.image_size)
    if prep.cache_size != index.stored_size:
        raise ConfigError(
            f"{config.data}: the shards hold {index.stored_size} px squares; these weights crop "
            f"{prep.crop_pct:g} of {prep.cache_size} px: write the shards again for them"
        )
    if fresh:
        write_json(run.data_check, shard_summary(index, config.data))
    batch = config.batch_size or DEFAULT_BATCH
    workers = config.workers or STREAM_WORKERS
    task = StreamedClassificationTask(
        index=index, source=config.data, prep=prep, recipe=TrainRecipe.from_config(config, batch),
        device=device, workers=workers,
    )  # fmt: skip
    if source is not None:
        start_from(source, model, Classes(list(index.classes), {}), run, console)
    notes = [
        f"data: {config.data} (shards, streamed by {workers} loader worker(s) per process), "
        f"{len(index.classes)} classes, {task.num_train_images} train / {len(task.val_idx)} val images",
        f"model: {name}{'' if config.model else ' (default for ' + device.type + ')'} "
        f"at {index.image_size} px",
    ]
    return Prepared(task, model.to(device, memory_format=torch.channels_last), name, batch, notes)
