"""Reading class folders and CSVs as people have them, and `lanner check` on the mess they contain."""

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import write_digit_folders
from PIL import Image

from lanner.data.check import check_dataset
from lanner.data.formats import detect_format, read_dataset
from lanner.data.images import image_size, open_image
from lanner.errors import DataError


def _exif_rotated_jpeg(path, w=60, h=40, orientation=6):
    img = Image.new("RGB", (w, h), (200, 10, 10))
    img.paste((10, 10, 200), (0, 0, w // 2, h))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes())


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "IMG_1.JPG"
    _exif_rotated_jpeg(path)
    img = open_image(path)
    assert img.size == (40, 60) == image_size(path)  # rotated 90 degrees: width and height swap
    top = np.asarray(img)[2, 20]
    assert top[2] > 150  # orientation 6 rotates clockwise: the blue left half is now on top


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA", "1"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    ext = "jpg" if mode == "CMYK" else "png"
    path = tmp_path / f"x.{ext}"
    Image.new(mode, (10, 8)).save(path)
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (10, 8)


def test_truncated_and_garbage_files_name_the_file(tmp_path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good, quality=95)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "notes.png"
    garbage.write_text("not an image")
    for path in (truncated, garbage):
        with pytest.raises(DataError, match=path.name):
            open_image(path)


def test_folder_layouts(tmp_path):
    flat = write_digit_folders(tmp_path / "flat", per_class=4)
    ds = read_dataset(flat)
    assert detect_format(flat) == "folder" and ds.classes == ["digit0", "digit1", "digit7"] and len(ds) == 12
    assert all(r.split is None for r in ds.records)
    split = write_digit_folders(tmp_path / "split", per_class=3, splits=("train", "valid", "test"))
    ds = read_dataset(split)
    assert sorted(ds.splits) == ["test", "train", "val"] and len(ds.subset("val")) == 9


def test_nested_and_uppercase_files_belong_to_their_class(tmp_path):
    root = tmp_path / "data"
    (root / "cat" / "2024" / "march").mkdir(parents=True)
    (root / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(root / "cat" / "2024" / "march" / "A.JPG")
    Image.new("RGB", (8, 8)).save(root / "dog" / "b.Jpeg")
    (root / "dog" / "readme.txt").write_text("not an image")
    (root / "dog" / ".hidden.jpg").write_bytes(b"")
    ds = read_dataset(root)
    assert sorted((ds.classes[r.label], r.path.name) for r in ds.records) == [
        ("cat", "A.JPG"),
        ("dog", "b.Jpeg"),
    ]


def test_csv_of_paths_and_labels(tmp_path):
    write_digit_folders(tmp_path, per_class=2)
    rows = ["path,label"] + [
        f"{p.relative_to(tmp_path)},{p.parent.name}" for p in sorted(tmp_path.rglob("*.png"))
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    ds = read_dataset(tmp_path / "labels.csv")
    assert ds.format == "csv" and len(ds) == 6 and all(r.path.exists() for r in ds.records)


def test_check_reports_every_problem_with_its_file(tmp_path):
    root = write_digit_folders(tmp_path / "d", per_class=5)
    (root / "digit1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    Image.new("RGB", (3000, 200)).save(root / "digit7" / "wide.png")
    summary = check_dataset(root)
    assert summary["num_images"] == 17 and summary["num_issues"] == 1
    assert summary["issues"][0]["path"].endswith("broken.jpg") and summary["issues"][0]["action"] == "skipped"
    assert summary["images_per_class"] == {"digit0": 5, "digit1": 6, "digit7": 6}
    assert summary["imbalance_ratio"] == 1.2 and summary["width"]["max"] == 3000
    with pytest.raises(DataError, match="broken.jpg"):
        check_dataset(root, strict=True)


def test_check_cli_json(tmp_path):
    root = write_digit_folders(tmp_path / "d", per_class=3)
    out = subprocess.run(
        [sys.executable, "-m", "lanner", "check", str(root), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(out.stdout)
    assert summary["num_classes"] == 3 and summary["images_per_class"]["digit7"] == 3


def test_sign_language_digits_real_data(shared_data):
    """The real set: 10 class folders, upper-case .JPG, three 3024x3024 photos with EXIF rotation."""
    root = shared_data / "sign_language_digits_cls" / "Dataset"
    ds = read_dataset(root)
    on_disk = [p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    assert len(ds) == len(on_disk) == 2062 and ds.classes == [str(i) for i in range(10)]
    assert any(r.path.suffix == ".JPG" for r in ds.records)
    big = [r.path for r in ds.records if max(Image.open(r.path).size) > 1000]
    assert len(big) == 3
    rotated = [p for p in big if Image.open(p).getexif().get(0x0112, 1) != 1]
    assert rotated, "expected EXIF-rotated photos in the real data"
    for p in rotated:
        raw_w, raw_h = Image.open(p).size
        assert open_image(p).size == image_size(p)
        if Image.open(p).getexif().get(0x0112) in (5, 6, 7, 8):
            assert image_size(p) == (raw_h, raw_w)
