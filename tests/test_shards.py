"""`lanner shard` and streaming from shards: real images written as tar shards, read back per process
and loader worker, a resumed epoch continuing at the same sample, training and eval from shards."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
from rich.console import Console

from lanner import api
from lanner.cli import run_cli
from lanner.config import make_config
from lanner.data.pixels import Preprocessing
from lanner.data.shard_index import INDEX_NAME, is_shard_folder, read_index
from lanner.data.shard_plan import EpochPlan
from lanner.data.shard_stream import ShardStream, stream_loader
from lanner.tasks.base import TrainRecipe
from lanner.tasks.classify.stream import StreamedClassificationTask
from tests.helpers import write_digit_folders

QUIET = Console(quiet=True)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """48 real digit images (3 classes) as shards of 5 images, prepared for 32 px training."""
    root = tmp_path_factory.mktemp("shards")
    data = write_digit_folders(root / "digits", labels=(0, 1, 7), per_class=16)
    out = root / "shards"
    api.shard(str(data), out, QUIET, image_size=32, shard_size="5", workers=1)
    return out


def test_shard_writes_tars_then_an_index(shards):
    index = read_index(shards)
    assert index.task == "classify" and index.classes == ["digit0", "digit1", "digit7"]
    assert (index.image_size, index.stored_size) == (32, 36)  # the cache's larger square, for crops
    assert index.count("train") + index.count("val") == 48 and index.count("val") == 9  # 3 per class
    assert sum(index.class_counts["train"]) == index.count("train")
    first = shards / index.splits["train"][0].name
    with tarfile.open(first) as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile(names[1]).read())
    assert names[:2] == ["00000000.jpg", "00000000.json"] and len(names) == 10
    assert meta["source"].startswith("digit") and meta["label"] in (0, 1, 2) and meta["width"] == 24
    assert (
        not list(shards.rglob("*.tmp")) and is_shard_folder(shards) and not is_shard_folder(shards / "train")
    )


def _epoch(
    shards: Path | str, rank: int, world: int, workers: int, skip: int = 0, epoch: int = 3
) -> list[tuple[int, list[str]]]:
    """(step, sample sources) of each batch of one process's epoch: batch 4, shuffle windows of 6."""
    index = read_index(str(shards))
    plan = EpochPlan(tuple(s.count for s in index.splits["train"]), 0, epoch, 4, rank, world, workers, 6)
    batches = stream_loader(ShardStream(str(shards), index.splits["train"], plan, skip))
    return [(b.step, [m["source"] for m in b.annotations]) for b in batches]


def test_processes_and_workers_cover_the_epoch(shards):
    """Two processes of two loader workers each: every sample read, equal steps, none read thrice."""
    n = read_index(shards).count("train")
    ranks = [_epoch(shards, rank, 2, 2) for rank in (0, 1)]
    assert [[s for s, _ in r] for r in ranks] == [list(range(len(ranks[0])))] * 2  # in order, equal steps
    seen = Counter(src for r in ranks for _, batch in r for src in batch)
    assert len(seen) == n and sum(seen.values()) == 2 * -(-n // 2)  # padded by wrapping: < world extra
    single = Counter(src for _, batch in _epoch(shards, 0, 1, 2) for src in batch)
    assert len(single) == n and set(single.values()) == {1}  # one process: each sample exactly once
    assert _epoch(shards, 0, 1, 2) == _epoch(shards, 0, 1, 2)  # deterministic per epoch
    memory = fsspec.filesystem("memory")  # any fsspec URL: the same epoch from an in-memory copy
    memory.put(str(shards), "/copy", recursive=True)
    assert is_shard_folder("memory://copy") and _epoch("memory://copy", 0, 1, 2) == _epoch(shards, 0, 1, 2)
    assert _epoch(shards, 0, 1, 2) != _epoch(shards, 0, 1, 2, epoch=4)  # another order next epoch


def test_resumed_epoch_continues_at_the_same_sample(shards):
    """From step k, the same samples (and, through the task, the same augmented tensors) as the
    uninterrupted epoch's steps k, k+1, ...: for each process, whichever worker resumes."""
    for rank in (0, 1):
        full = _epoch(shards, rank, 2, 2)
        for skip in (1, 2, 3):
            assert _epoch(shards, rank, 2, 2, skip) == full[skip:]
    index = read_index(shards)
    prep = Preprocessing(32, (0.5,) * 3, (0.25,) * 3)
    task = StreamedClassificationTask(
        index=index, source=str(shards), prep=prep, recipe=TrainRecipe(batch_size=4, seed=1),
        device=torch.device("cpu"), workers=2,
    )  # fmt: skip
    full = list(task.train_batches(1))
    resumed = list(task.train_batches(1, skip=3))
    assert len(full) == task.steps_per_epoch() == -(-index.count("train") // 4)
    for (x0, y0), (x1, y1) in zip(full[3:], resumed, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert task.num_val_images == 9 and task.class_counts.sum() == index.count("train")


def test_train_and_eval_from_shards(shards, tmp_path):
    """`lanner train SHARDS` streams one real epoch, then evaluates on the val shards."""
    config = make_config(
        {"data": str(shards), "model": "resnet10t", "epochs": 1, "batch_size": 8, "workers": 1,
         "run": str(tmp_path / "run"), "device": "cpu"}, "test",
    )  # fmt: skip
    run = api.train(config, QUIET, evaluate_after=False)
    api.evaluate(run, console=QUIET, report=False)  # the HTML report is tested elsewhere
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 2 and "val_acc" in history[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "val" and 0.0 <= metrics["accuracy"] <= 1.0
    assert json.loads((run / "data_check.json").read_text())["format"] == "lanner-shards"


def test_shard_a_detection_dataset_scales_its_boxes(shared_data, tmp_path):
    voc = shared_data / "raccoon_voc"
    out = tmp_path / "det"
    s = api.shard(str(voc), out, QUIET, image_size=64, shard_size="8MB", workers=1)
    assert s["task"] == "detect" and s["stored_size"] == 64
    index = read_index(out)
    with tarfile.open(out / index.splits["train"][0].name) as tar:
        meta = json.loads(tar.extractfile(tar.getnames()[1]).read())
    boxes = np.array(meta["boxes"])
    assert len(boxes) and meta["scale"] == pytest.approx(64 / max(meta["width"], meta["height"]))
    assert boxes.min() >= 0 and boxes.max() <= 64  # on the 64 px letterboxed canvas


def test_bad_input_is_a_clear_error(shards, tmp_path, capsys):
    data = write_digit_folders(tmp_path / "d", labels=(0, 1), per_class=4)
    assert run_cli(["shard", str(data), str(tmp_path / "o"), "--shard-size", "lots"]) == 2
    assert "--shard-size 'lots'" in _said(capsys)
    assert run_cli(["shard", str(data), str(shards)]) == 2  # never over existing shards
    assert "already holds shards" in _said(capsys)
    assert run_cli(["train", str(shards), "--image-size", "48", "--run", str(tmp_path / "r")]) == 2
    assert "written for 32 px" in _said(capsys)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / INDEX_NAME).write_text("{not json")
    assert run_cli(["train", str(broken), "--task", "classify", "--run", str(tmp_path / "r2")]) == 2
    assert INDEX_NAME in _said(capsys)


def _said(capsys) -> str:
    out = capsys.readouterr()
    return " ".join((out.out + out.err).split())  # rich wraps long lines
