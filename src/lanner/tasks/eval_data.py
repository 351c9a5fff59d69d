"""The data a run is evaluated on, for every task: its own split, or another dataset on its classes."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from lanner.config import TrainConfig
from lanner.data.classes import onto_classes
from lanner.data.formats import read_dataset
from lanner.data.records import Dataset
from lanner.data.split import apply_saved_split, select_splits
from lanner.errors import DataError


def load_eval_data(
    loaded, data: str | None, split: str | None, training_data: Callable[[TrainConfig], Dataset],
    console: Console, allow_outside_root: bool = False,
) -> tuple[Dataset, str | None]:  # fmt: skip
    """(the images to evaluate, the split's name). Without ``data``: the run's own data read as in
    training (``training_data``, trusting what the run trusted), with its saved split; with it, that
    dataset on the run's classes (read outside its folder only when ``allow_outside_root``)."""
    if data is None:
        dataset = training_data(loaded.config)
        apply_saved_split(dataset, loaded.run.split)
    else:
        dataset, dropped = onto_classes(
            read_dataset(data, allow_outside_root=allow_outside_root), loaded.classes
        )
        if dropped:
            console.print(
                f"[yellow]note[/]: class(es) {', '.join(dropped)} unknown to this model; their images "
                "or boxes are left out of the evaluation"
            )
    subset, split = select_splits(dataset, split)
    if not subset.records:
        raise DataError(
            f"{data or loaded.config.data}: no images in split {split!r} (splits: {dataset.splits})"
        )
    return subset, split
