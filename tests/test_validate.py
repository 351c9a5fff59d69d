"""The shared box validation every detection reader goes through (lanner.data.validate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lanner.data.validate import DetectionBuilder, RawBox, bounding_box, format_number, place_image
from lanner.errors import DataError


def _image(path: Path, size=(100, 80), exif_orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, (10, 20, 30))
    if exif_orientation is None:
        img.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        img.save(path, exif=exif)
    return path


def _build(tmp_path: Path, boxes, classes=None, **kwargs):
    image = _image(tmp_path / "a.png")
    builder = DetectionBuilder("test", tmp_path, classes, **kwargs)
    builder.add_image(image, boxes, source="a.json")
    return builder.build()


def _issues(ds, kind=None, action=None):
    return [
        i for i in ds.issues if (kind is None or i.kind == kind) and (action is None or i.action == action)
    ]


def test_clean_boxes_pass_without_issues(tmp_path):
    ds = _build(tmp_path, [RawBox("cat", (10, 10, 50, 40)), RawBox("dog", (0, 0, 100, 80))])
    assert ds.classes == ["cat", "dog"] and ds.task == "detect"
    rec = ds.records[0]
    assert (rec.width, rec.height) == (100, 80)
    assert rec.boxes.dtype == np.float32 and rec.labels.dtype == np.int64 and rec.iscrowd.dtype == bool
    np.testing.assert_array_equal(rec.boxes, [[10, 10, 50, 40], [0, 0, 100, 80]])
    assert rec.labels.tolist() == [0, 1]
    assert ds.issues == []


def test_swapped_corners_are_fixed(tmp_path):
    ds = _build(tmp_path, [RawBox("cat", (50, 40, 10, 10))])
    np.testing.assert_array_equal(ds.records[0].boxes, [[10, 10, 50, 40]])
    (issue,) = ds.issues
    assert (issue.action, issue.kind, issue.path) == ("fixed", "box", "a.json")
    assert "min > max" in issue.problem


def test_boxes_outside_are_clipped_but_rounding_is_silent(tmp_path):
    ds = _build(tmp_path, [RawBox("cat", (-5, 10, 120, 40)), RawBox("cat", (0, 0, 100.004, 80))])
    np.testing.assert_allclose(ds.records[0].boxes, [[0, 10, 100, 40], [0, 0, 100, 80]])
    (issue,) = ds.issues
    assert issue.action == "fixed" and "outside" in issue.problem and "100x80" in issue.problem


@pytest.mark.parametrize(
    "xyxy, reason",
    [
        ((10, 10, 10, 40), "zero area"),
        ((float("nan"), 0, 5, 5), "NaN"),
        ((120, 0, 150, 30), "zero area"),
        (("a", 0, 5, 5), "not 4 numbers"),
    ],
)
def test_degenerate_boxes_are_dropped(tmp_path, xyxy, reason):
    ds = _build(tmp_path, [RawBox("cat", xyxy), RawBox("cat", (1, 1, 9, 9))])
    assert ds.records[0].num_boxes == 1
    (issue,) = ds.issues
    assert issue.action == "dropped" and reason in issue.problem


def test_duplicates_are_dropped(tmp_path):
    ds = _build(tmp_path, [RawBox("cat", (1, 1, 9, 9))] * 3 + [RawBox("dog", (1, 1, 9, 9))])
    assert ds.records[0].num_boxes == 2  # the same box with another class is not a duplicate
    assert len(_issues(ds, "duplicate", "dropped")) == 2


def test_unknown_classes_are_dropped_or_raise(tmp_path):
    ds = _build(tmp_path, [RawBox("cat", (1, 1, 9, 9)), RawBox("cow", (1, 1, 9, 9))], classes=["cat", "dog"])
    assert ds.classes == ["cat", "dog"] and ds.records[0].labels.tolist() == [0]
    (issue,) = _issues(ds, "class", "dropped")
    assert "'cow'" in issue.problem
    with pytest.raises(DataError, match="a.json: unknown class 'cow'"):
        _build(tmp_path, [RawBox("cow", (1, 1, 9, 9))], classes=["cat"], on_unknown_class="error")


def test_ignore_regions_background_and_negatives(tmp_path):
    ds = _build(
        tmp_path,
        [RawBox("__ignore__", (1, 1, 9, 9)), RawBox("_background_", (1, 1, 5, 5))],
        classes=["_background_", "cat"],
    )
    assert ds.classes == ["cat"]
    rec = ds.records[0]
    assert rec.num_boxes == 0  # kept as a negative image
    np.testing.assert_array_equal(rec.ignore, [[1, 1, 9, 9]])
    assert len(_issues(ds, "class")) == 1  # _background_ is never a class


def test_missing_and_unreadable_images_are_skipped(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    builder = DetectionBuilder("test", tmp_path)
    assert not builder.add_image(tmp_path / "nope.jpg", [], source="x.xml")
    assert not builder.add_image(broken, [], source="y.xml")
    assert not builder.add_image(None, [], source="z.xml")
    ds = builder.build()
    assert len(ds) == 0
    assert [(i.path, i.action, i.kind) for i in ds.issues] == [
        ("x.xml", "skipped", "image"),
        ("y.xml", "skipped", "image"),
        ("z.xml", "skipped", "image"),
    ]
    assert "not found" in ds.issues[0].problem and "broken.jpg" in ds.issues[1].problem


def test_annotated_size_mismatch_uses_the_real_upright_size(tmp_path):
    # Stored 100x80 with EXIF orientation 6 (rotate 90): upright the image is 80x100.
    image = _image(tmp_path / "rot.jpg", (100, 80), exif_orientation=6)
    builder = DetectionBuilder("test", tmp_path)
    builder.add_image(image, [RawBox("cat", (0, 0, 80, 100))], source="rot.xml", annotated_size=(100, 80))
    ds = builder.build()
    rec = ds.records[0]
    assert (rec.width, rec.height) == (80, 100)
    np.testing.assert_array_equal(rec.boxes, [[0, 0, 80, 100]])  # not clipped to the stale 100x80
    (issue,) = ds.issues
    assert (issue.action, issue.kind) == ("kept", "size") and "100x80" in issue.problem


def test_strict_turns_problems_into_one_error_listing_them(tmp_path):
    with pytest.raises(DataError) as err:
        _build(tmp_path, [RawBox("cat", (50, 40, 10, 10)), RawBox("cat", (5, 5, 5, 5))], strict=True)
    message = str(err.value)
    assert "2 problem(s)" in message and "min > max" in message and "zero area" in message
    # Informational notes (e.g. a category remap) do not fail strict mode.
    builder = DetectionBuilder("test", tmp_path, strict=True)
    builder.note("a.json", "category ids remapped", "fixed", "category")
    assert builder.build().issues


def test_small_helpers(tmp_path):
    assert bounding_box([(3, 4), (1, 9), (2, 2)]) == (1, 2, 3, 9)
    assert bounding_box([]) is None
    assert format_number(81.0, 1) == "81" and format_number(107.369, 1) == "107.4"
    assert format_number(-0.01, 1) == "0"
    src = _image(tmp_path / "src" / "a.png")
    taken: set[str] = set()
    first = place_image(src, tmp_path / "out", taken)
    second = place_image(src, tmp_path / "out", taken)
    assert (first.name, second.name) == ("a.png", "a_1.png") and second.is_file()
