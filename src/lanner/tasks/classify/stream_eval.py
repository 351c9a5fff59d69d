"""`lanner eval` of a classifier on a shard folder: a split of the shards, read into memory."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from lanner.config import InferenceOptions
from lanner.data.pixels import Preprocessing
from lanner.data.records import ImageRecord
from lanner.data.shard_index import read_index
from lanner.data.shard_stream import read_all
from lanner.errors import DataError
from lanner.eval.classification import classification_metrics, format_report, write_classification_outputs
from lanner.predict.tta import class_probs
from lanner.tasks.classify.evaluate import prediction_items
from lanner.tasks.loading import LoadedRun


@torch.no_grad()
def evaluate_on_shards(
    loaded: LoadedRun, source: str, split: str | None, console: Console, options: InferenceOptions
) -> dict:
    """Metrics of ``loaded`` on one split of the shards (default test, else val)."""
    index = read_index(source)
    split = split or ("test" if "test" in index.splits else "val")
    if not index.count(split):
        raise DataError(f"{source}: no images in split {split!r} (splits: {sorted(index.splits)})")
    prep = Preprocessing.from_dict(loaded.meta.get("preprocessing"))
    if prep.cache_size != index.stored_size or index.classes != loaded.classes:
        raise DataError(f"{source}: shards of other classes or another size ({index.stored_size} px) "
                        f"than this run's ({prep.cache_size} px)")  # fmt: skip
    images, metas = read_all(source, index.splits[split])
    probs = torch.cat([
        class_probs(loaded.model, images[i : i + 64], prep, loaded.device, options.tta)
        for i in range(0, len(images), 64)
    ])  # fmt: skip
    targets = torch.tensor([m["label"] for m in metas])
    metrics = {**classification_metrics(probs, targets, loaded.classes), "tta": options.tta}
    records = [ImageRecord(Path(m["source"]), label=m["label"]) for m in metas]
    write_classification_outputs(
        metrics, prediction_items(records, probs, len(loaded.classes)), loaded.run, split
    )
    console.print(
        f"evaluation on split {split} of the shards ({len(records)} images) with {loaded.checkpoint.name}:"
    )
    console.print(format_report(metrics), markup=False, highlight=False)
    return {**metrics, "split": split}
