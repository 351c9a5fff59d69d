"""Tiled detection end to end: large canvases with real digits, train on tiles, eval on full images."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from lanner import api
from lanner.config import InferenceOptions, make_config
from lanner.data.formats import read_dataset
from lanner.demo_detect import write_digit_canvases
from lanner.engine.checkpoint import load_checkpoint
from lanner.engine.history import read_history
from lanner.tasks.detect.predict import predict_detection_files
from lanner.tasks.loading import load_run


@pytest.fixture(scope="module")
def canvases(tmp_path_factory):
    return write_digit_canvases(
        tmp_path_factory.mktemp("canv"), n_train=2, n_val=1, size=640, objects=(6, 10)
    )


@pytest.fixture(scope="module")
def tiled_run(canvases, tmp_path_factory) -> tuple[Path, str]:
    """One run trained on tiles (and its start-up output, whitespace removed), shared by the tests."""
    config = make_config(
        {
            "data": str(canvases),
            "task": "detect",
            "run": str(tmp_path_factory.mktemp("tiled") / "run"),
            "model": "fcos_test_resnet",
            "tile": 160,
            "overlap": 0.25,
            "epochs": 2,
            "batch_size": 8,
            "empty_tile_ratio": 0.25,
            "hflip": False,
        }
    )
    printed = io.StringIO()
    run = api.train(config, Console(file=printed), evaluate_after=False)
    return run, "".join(printed.getvalue().split())


def test_train_on_tiles_and_evaluate_on_full_images(canvases, tiled_run):
    run, out = tiled_run
    ds = read_dataset(canvases)
    n_train = len(ds.subset("train"))
    # 640 px with 160 px tiles at 25% overlap: starts every 120 px -> 5 x 5 windows per canvas.
    assert f"{25 * n_train}tilesfrom{n_train}images" in out
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert state["meta"]["tiling"]["tile"] == 160 and state["meta"]["image_size"] == 160
    history = read_history(run / "history.csv")
    assert len(history) == 2 and "val_map50" in history[0]
    # An epoch is every non-empty tile plus a quarter as many empty ones.
    tiles_per_epoch = int(out.split("epoch=")[1].split("tiles")[0])
    non_empty = int(out.split("tilesfrom")[1].split("images:")[1].split("with")[0])
    assert tiles_per_epoch == non_empty + round(0.25 * non_empty) < 25 * n_train

    tiled = api.evaluate(run, str(canvases), "val", report=False)
    whole = api.evaluate(run, str(canvases), "val", report=False, tile=0)
    assert tiled["tiling"]["tile"] == 160 and whole["tiling"] is None
    assert tiled["num_images"] == whole["num_images"] == 1
    preds = json.loads((run / "eval" / "predictions.json").read_text())
    assert preds["images"][0]["width"] == 640  # full-image coordinates, not tile coordinates


def test_tiled_predictions_are_in_full_image_pixels(canvases, tiled_run, tmp_path):
    run, _ = tiled_run
    image = sorted((canvases / "val").glob("*.jpg"))[0]
    rows = predict_detection_files(
        load_run(run),
        [str(image)],
        tmp_path / "out",
        InferenceOptions(format="csv"),
        Console(),
        score_threshold=0.0,
    )
    boxes = np.array(rows[0]["boxes"]).reshape(-1, 4)
    assert len(boxes) and boxes.max() <= 640 and boxes[:, 2].max() > 160  # beyond the first tile


def test_a_budget_shorter_than_one_epoch_of_tiles_is_planned_early_and_validates_on_a_sample(tmp_path):
    # Big canvases in small tiles: one epoch is far longer than the budget, and validating on the four
    # val canvases whole would take more than a quarter of it (issue 16, item 5).
    data = write_digit_canvases(tmp_path / "canv", n_train=3, n_val=4, size=1600, objects=(150, 200))
    config = make_config(
        {"data": str(data), "task": "detect", "run": str(tmp_path / "run"), "model": "fcos_test_resnet",
         "tile": 160, "overlap": 0.25, "time": "8s", "batch_size": 2, "hflip": False}
    )  # fmt: skip
    printed = io.StringIO()
    run = api.train(config, Console(file=printed, width=400), evaluate_after=False)
    said = printed.getvalue()
    assert "(first steps):" in said and "of one epoch" in said  # the plan came early and says so
    assert "validation on " in said and " of 4 val images (a seeded sample" in said
    rows = read_history(run / "history.csv")
    segment = json.loads((run / "segments.json").read_text())[0]
    # the schedule was laid over the steps the budget bought (inside one epoch), not over 10 epochs
    assert segment["end_step"] < segment["steps_per_epoch"] and 0 < float(rows[-1]["epoch_fraction"]) < 1
    assert float(rows[-1]["lr"]) < segment["base_lr"]  # and decayed from its start
