"""A packed cache of decoded, pre-resized images: decode JPEGs once, train many epochs from memory.

Every image goes through :func:`preprocess` (upright, RGB, shorter side resized, centre-cropped to a
square a little larger than the training size) into one uint8 array [N, S, S, 3] memory-mapped on
disk. Random crops for training and centre crops for evaluation are then taken from that array,
and prediction runs the same :func:`preprocess` on new files, so train and test see the same pixels.
The cache key covers the file list, sizes, modification times and the cache resolution.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from lanner.data.images import open_image
from lanner.data.records import Issue
from lanner.errors import DataError

CACHE_VERSION = 2


def default_cache_dir() -> Path:
    return Path(os.environ.get("LANNER_CACHE", Path.home() / ".cache" / "lanner"))


def preprocess_with_size(path: str | Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one image to a [size, size, 3] uint8 array (shorter side to ``size``, centre crop),
    and return its original upright (width, height) too."""
    img = open_image(path)
    original = img.size  # before square_pixels: a JPEG's draft decode shrinks it in place
    return square_pixels(img, size), original


def square_pixels(img: Image.Image, size: int) -> np.ndarray:
    """An RGB image as a classifier sees it: [size, size, 3] uint8, shorter side to ``size``, centre crop
    (files through :func:`preprocess`, in-memory crops of a detector's boxes directly)."""
    w, h = img.size
    new_w, new_h = _resized(w, h, size)
    if max(w, h) > 4 * new_w:
        img.draft("RGB", (new_w, new_h))  # JPEG: decode at reduced size first, much faster for huge photos
    return _centre_crop(img, new_w, new_h, size)


def _resized(w: int, h: int, size: int) -> tuple[int, int]:
    """(width, height) with the shorter side at ``size``."""
    scale = size / min(w, h)
    return max(size, round(w * scale)), max(size, round(h * scale))


def _centre_crop(img: Image.Image, new_w: int, new_h: int, size: int) -> np.ndarray:
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def preprocess(path: str | Path, size: int) -> np.ndarray:
    """What a classifier sees of one file, identical at training and prediction time."""
    return preprocess_with_size(path, size)[0]


Loaded = tuple[np.ndarray | None, tuple[int, int], str | None]  # (pixels, original size, error)


def _load_square(args: tuple[str, int]) -> Loaded:
    path, size = args
    try:
        return (*preprocess_with_size(path, size), None)
    except DataError as e:
        return None, (0, 0), str(e)


def cache_key(paths: list[Path], size: int) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}:{size}".encode())
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()[:20]


def _read_issues(path: Path) -> list[Issue]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [
        Issue(*line.split("\t", 1), action="skipped", kind="unreadable") for line in lines if "\t" in line
    ]


def build_image_cache(
    paths: list[Path],
    size: int,
    cache_dir: Path,
    *,
    loader: Callable[[tuple[str, int]], Loaded] = _load_square,
    tag: str = "square",
    workers: int = 1,
    progress=None,
) -> tuple[np.ndarray, np.ndarray, list[Issue]]:
    """Decode every image once with ``loader`` into a memmap on disk, reused by later runs.

    Returns (images [N, S, S, 3] uint8, original sizes [N, 2] with (0, 0) for unreadable files,
    issues). ``tag`` names the kind of preprocessing, so two kinds never share a cache file.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = f"{cache_key(paths, size)}-{tag}"
    arr_path, sizes_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.sizes.npy"
    issues_path = cache_dir / f"{key}.issues.txt"
    if arr_path.exists() and sizes_path.exists():
        return np.load(arr_path, mmap_mode="r"), np.load(sizes_path), _read_issues(issues_path)
    tmp = cache_dir / f".{key}.{os.getpid()}.npy"
    images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
    sizes = np.zeros((len(paths), 2), dtype=np.int64)
    issues: list[Issue] = []
    jobs = [(str(p), size) for p in paths]
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 and len(paths) > 32 else _Serial() as pool:
        for i, (pixels, wh, err) in enumerate(pool.map(loader, jobs, chunksize=16)):
            if pixels is None:
                issues.append(Issue.unreadable(paths[i], err))
            else:
                images[i], sizes[i] = pixels, wh
            if progress is not None:
                progress(i + 1)
    images.flush()
    del images
    issues_path.write_text("".join(f"{i.path}\t{i.problem}\n" for i in issues))
    np.save(sizes_path, sizes)
    os.replace(tmp, arr_path)
    return np.load(arr_path, mmap_mode="r"), sizes, issues


def build_cache(
    paths: list[Path], size: int, cache_dir: Path, *, workers: int = 1, progress=None
) -> tuple[np.ndarray, np.ndarray, list[Issue]]:
    """Classification cache: (centre-cropped squares [N,S,S,3] uint8, readable mask [N], issues)."""
    images, sizes, issues = build_image_cache(paths, size, cache_dir, workers=workers, progress=progress)
    return images, sizes[:, 0] > 0, issues


class _Serial:
    """Stand-in for a process pool when one worker is asked for (no fork overhead)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items, chunksize=1):
        return map(fn, items)
