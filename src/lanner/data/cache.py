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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from lanner.data.images import open_image
from lanner.data.records import Issue
from lanner.errors import DataError

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("LANNER_CACHE", Path.home() / ".cache" / "lanner"))


def preprocess(path: str | Path, size: int) -> np.ndarray:
    """Decode one image to a [size, size, 3] uint8 array: shorter side to ``size``, centre crop."""
    img = open_image(path)
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if max(w, h) > 4 * new_w:
        img.draft("RGB", (new_w, new_h))  # JPEG: decode at reduced size first, much faster for huge photos
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _load_one(args: tuple[str, int]) -> tuple[np.ndarray | None, str | None]:
    path, size = args
    try:
        return preprocess(path, size), None
    except DataError as e:
        return None, str(e)


def cache_key(paths: list[Path], size: int) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}:{size}".encode())
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()[:20]


def build_cache(
    paths: list[Path], size: int, cache_dir: Path, *, workers: int = 1, progress=None
) -> tuple[np.ndarray, np.ndarray, list[Issue]]:
    """Return (images [N,S,S,3] uint8 memmap, ok mask [N], issues) — built once, reused after."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(paths, size)
    arr_path, ok_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.ok.npy"
    issues_path = cache_dir / f"{key}.issues.txt"
    if arr_path.exists() and ok_path.exists():
        issues = (
            [
                Issue(*line.split("\t", 1), action="skipped", kind="unreadable")
                for line in issues_path.read_text().splitlines()
                if "\t" in line
            ]
            if issues_path.exists()
            else []
        )
        return np.load(arr_path, mmap_mode="r"), np.load(ok_path), issues
    tmp = cache_dir / f".{key}.{os.getpid()}.npy"
    images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
    ok = np.zeros(len(paths), dtype=bool)
    issues: list[Issue] = []
    jobs = [(str(p), size) for p in paths]
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else _Serial() as pool:
        for i, (img, err) in enumerate(pool.map(_load_one, jobs, chunksize=16)):
            if img is None:
                issues.append(
                    Issue(str(paths[i]), err.split(": ", 1)[-1], action="skipped", kind="unreadable")
                )
            else:
                images[i], ok[i] = img, True
            if progress is not None:
                progress(i + 1)
    images.flush()
    del images
    issues_path.write_text("".join(f"{i.path}\t{i.problem}\n" for i in issues))
    np.save(ok_path, ok)
    os.replace(tmp, arr_path)
    return np.load(arr_path, mmap_mode="r"), ok, issues


class _Serial:
    """Stand-in for a process pool when one worker is asked for (no fork overhead)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items, chunksize=1):
        return map(fn, items)
