"""Everything a classification run needs before the first step, for a new run or a resumed one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from lanner._io import write_json
from lanner.config import TrainConfig
from lanner.data.check import summarise
from lanner.data.formats import read_dataset
from lanner.data.records import Dataset
from lanner.data.split import split_for_run
from lanner.engine.setup import default_workers
from lanner.models.registry import create_model, default_model, load_pretrained
from lanner.tasks.classify import Preprocessing
from lanner.tasks.classify_data import build_classification_task, cache_records, select_classes

DEFAULT_BATCH = 32


@dataclass
class Prepared:
    """A task ready for the trainer, with its model and what to tell the user about the choices."""

    task: object
    model: nn.Module
    model_name: str
    batch_size: int
    notes: list[str] = field(default_factory=list)


def build_classifier(name: str, num_classes: int) -> tuple[nn.Module, tuple, tuple]:
    """A timm classifier and the mean/std its pretrained weights expect (ImageNet's by default)."""
    import timm.data

    model = create_model("classify", name, num_classes=num_classes)
    cfg = timm.data.resolve_data_config({}, model=model)
    return model, tuple(cfg["mean"]), tuple(cfg["std"])


def load_classification_data(config: TrainConfig) -> Dataset:
    dataset = read_dataset(config.data, config.format)
    return select_classes(dataset, config.classes, config.rename)


def prepare_classification(
    config: TrainConfig, run_dir: Path, device: torch.device, console: Console, fresh: bool
) -> Prepared:
    dataset = load_classification_data(config)
    made = split_for_run(dataset, run_dir, config.val_fraction, config.seed, fresh)
    default_name, default_size = default_model("classify", device)
    name = config.model or default_name
    size = config.image_size or default_size
    model, mean, std = build_classifier(name, len(dataset.classes))
    prep = Preprocessing(size, mean, std)
    cached = cache_records(
        dataset, prep.cache_size, config.cache_dir, config.workers or default_workers(), console
    )
    if fresh:
        write_json(run_dir / "data_check.json", summarise(dataset, cached.issues))
    batch = config.batch_size or DEFAULT_BATCH
    task = build_classification_task(config, dataset, cached, prep, batch, device)
    notes = [
        f"data: {config.data} ({dataset.format}), {len(dataset.classes)} classes, "
        f"{task.num_train_images} train / {len(task.val_idx)} val images"
        + (
            f" (val split drawn: {config.val_fraction:.0%}, seed {config.seed}, saved in split.csv)"
            if made
            else ""
        ),
        f"model: {name}{'' if config.model else ' (default for ' + device.type + ')'} at {size} px"
        f"{'' if config.image_size else ' (default)'}",
    ]
    if fresh and config.pretrained:
        fresh_layers = load_pretrained(model, config.pretrained)
        notes.append(f"weights from {config.pretrained}; new layers: {', '.join(fresh_layers) or 'none'}")
    return Prepared(task, model.to(device), name, batch, notes)
