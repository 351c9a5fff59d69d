"""Tiling as a view over records: windows, clipped targets, empty-tile sampling, windowed reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lanner.data.images import open_image
from lanner.data.records import Dataset, ImageRecord
from lanner.data.tiling import (
    decode_upright,
    make_tiles,
    overlap_pixels,
    read_downscaled,
    read_window,
    tile_windows,
)
from lanner.errors import ConfigError, DataError


def _covered(windows: np.ndarray, width: int, height: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in windows:
        mask[y0:y1, x0:x1] = True
    return mask


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"),
    [(3000, 2000, 1024, 256), (1025, 1024, 1024, 0.2), (5000, 700, 640, 0.25), (641, 3000, 640, 1)],
)
def test_windows_cover_the_image_and_stay_inside(width, height, tile, overlap):
    windows = tile_windows(width, height, tile, overlap)
    assert windows.dtype == np.int64 and windows.shape[1] == 4
    assert (windows[:, :2] >= 0).all() and (windows[:, 2] <= width).all() and (windows[:, 3] <= height).all()
    assert _covered(windows, width, height).all()
    sizes = np.unique(windows[:, 2:] - windows[:, :2], axis=0)
    assert sizes.tolist() == [[min(tile, width), min(tile, height)]]  # no ragged edge tiles


def test_windows_overlap_by_at_least_the_requested_amount():
    windows = tile_windows(3000, 900, 1000, 0.25)  # one row, 250 px overlap
    starts = np.unique(windows[:, 0])
    assert (np.diff(starts) <= 750).all()
    assert starts[-1] == 2000  # last column shifted inward to end at the border


def test_small_image_is_one_window_of_the_whole_image():
    assert tile_windows(300, 200, 1024, 0.2).tolist() == [[0, 0, 300, 200]]
    # Only the long side is tiled when the short side fits.
    assert tile_windows(1500, 300, 1024, 0).tolist() == [[0, 0, 1024, 300], [476, 0, 1500, 300]]


def test_overlap_pixels_and_bad_values():
    assert overlap_pixels(1000, 0.2) == 200
    assert overlap_pixels(1000, 64) == 64
    assert overlap_pixels(1000, 0.0) == 0
    for bad in (1000, 1.5, -0.1, 2000):
        with pytest.raises(ConfigError):
            overlap_pixels(1000, bad)


def _dataset(tmp_path: Path) -> Dataset:
    rec = ImageRecord(
        path=tmp_path / "a.jpg",
        width=2000,
        height=1000,
        boxes=np.array(
            [
                [100, 100, 200, 200],  # inside the first tile only
                [900, 100, 1100, 200],  # straddles the border of tiles 0 and 1 (no overlap)
                [960, 300, 1060, 400],  # 40% left of the border, 60% right
                [1500, 500, 1600, 600],  # crowd, inside the second tile
            ],
            np.float32,
        ),
        labels=np.array([0, 1, 0, 2]),
        iscrowd=np.array([False, False, False, True]),
        ignore=np.array([[950, 800, 1050, 900]], np.float32),
    )
    empty = ImageRecord(path=tmp_path / "b.jpg", width=6000, height=1000)
    return Dataset(["a", "b", "c"], [rec, empty], task="detect")


def test_tiles_clip_boxes_drop_barely_visible_ones_and_carry_crowd_and_ignore(tmp_path):
    index = make_tiles(_dataset(tmp_path), tile=1000, overlap=0, min_visibility=0.5)
    first, second = index[0], index[1]
    assert first.window == (0, 0, 1000, 1000) and second.window == (1000, 0, 2000, 1000)
    # Tile coordinates: the second tile's boxes are shifted by its origin.
    assert first.boxes.tolist() == [[100, 100, 200, 200], [900, 100, 1000, 200]]
    assert first.labels.tolist() == [0, 1]
    assert second.boxes.tolist() == [[0, 100, 100, 200], [0, 300, 60, 400], [500, 500, 600, 600]]
    assert second.iscrowd.tolist() == [False, False, True]
    # The 40% sliver on the first tile is dropped and becomes an ignore region instead.
    assert [960 - 0, 300, 1000, 400] in first.ignore.tolist()
    assert [950, 800, 1000, 900] in first.ignore.tolist()
    assert [0, 800, 50, 900] in second.ignore.tolist()


def test_min_visibility_is_configurable(tmp_path):
    strict = make_tiles(_dataset(tmp_path), tile=1000, overlap=0, min_visibility=0.7)
    lenient = make_tiles(_dataset(tmp_path), tile=1000, overlap=0, min_visibility=0.3)
    assert len(strict[1].boxes) == 1  # the 50% and 60% pieces are gone, the crowd box stays
    assert len(lenient[0].boxes) == 3  # the 40% piece is kept
    plain = make_tiles(_dataset(tmp_path), tile=1000, overlap=0, min_visibility=0.7, cut_to_ignore=False)
    assert plain[1].ignore.tolist() == [[0, 800, 50, 900]]


def test_epoch_samples_empty_tiles_at_the_ratio_reproducibly(tmp_path):
    index = make_tiles(_dataset(tmp_path), tile=1000, overlap=0, empty_ratio=1.0)
    assert len(index) == 2 + 6 and index.num_non_empty == 2 and index.num_empty == 6
    epoch0 = index.epoch_tiles(0, seed=1)
    assert len(epoch0) == index.epoch_size() == 4
    assert sum(t.is_empty for t in epoch0) == 2 and sum(not t.is_empty for t in epoch0) == 2
    assert [t.window for t in epoch0] == [t.window for t in index.epoch_tiles(0, seed=1)]
    windows_per_epoch = {tuple((t.record_index, t.window) for t in index.epoch_tiles(e, 1)) for e in range(8)}
    assert len(windows_per_epoch) > 1  # each epoch sees different background
    assert "8 tiles from 2 images" in index.describe() and "4 tiles per epoch" in index.describe()
    everything = make_tiles(_dataset(tmp_path), tile=1000, overlap=0, empty_ratio=None)
    assert len(everything.epoch_tiles(0)) == 8


def test_record_without_size_reads_the_header(tmp_path):
    Image.new("RGB", (1500, 800)).save(tmp_path / "c.png")
    ds = Dataset(["a"], [ImageRecord(path=tmp_path / "c.png")], task="detect")
    assert [t.window for t in make_tiles(ds, 1000, 0.2)] == [(0, 0, 1000, 800), (500, 0, 1500, 800)]


def _random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_read_window_matches_cropping_the_upright_image(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.png"
    exif = Image.Exif()
    exif[0x0112] = orientation
    _random_image(60, 40).save(path, exif=exif)
    upright = open_image(path)
    window = (7, 5, 31, 22)
    got = read_window(path, window)
    assert got.mode == "RGB" and got.size == (24, 17)
    assert np.array_equal(np.asarray(got), np.asarray(upright.crop(window)))
    whole = decode_upright(path)
    assert whole.mode == "RGB" and np.array_equal(np.asarray(whole), np.asarray(upright))


def test_read_downscaled_jpeg_uses_draft_and_keeps_aspect(tmp_path):
    path = tmp_path / "big.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    Image.new("RGB", (2400, 1200), (200, 10, 10)).save(path, exif=exif, quality=90)
    small = read_downscaled(path, 300)
    assert small.size == (150, 300) and small.mode == "RGB"
    assert np.abs(np.asarray(small).astype(int).mean((0, 1)) - [200, 10, 10]).max() < 6
    assert read_downscaled(path, 5000).size == (1200, 2400)


def test_unreadable_window_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.jpg"):
        read_window(bad, (0, 0, 10, 10))
    with pytest.raises(DataError, match="broken.jpg"):
        decode_upright(bad)
    with pytest.raises(DataError, match="missing.png: file not found"):
        decode_upright(tmp_path / "missing.png")


def test_decode_upright_converts_other_modes_to_rgb(tmp_path):
    Image.new("LA", (30, 20), (100, 0)).save(tmp_path / "transparent.png")
    Image.new("L", (30, 20), 77).save(tmp_path / "gray.png")
    assert np.asarray(decode_upright(tmp_path / "transparent.png"))[0, 0].tolist() == [255, 255, 255]
    assert np.asarray(decode_upright(tmp_path / "gray.png"))[0, 0].tolist() == [77, 77, 77]
