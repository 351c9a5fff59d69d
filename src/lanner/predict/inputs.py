"""What `lanner predict` is pointed at: files, folders and globs, expanded to image paths; and
what ``lanner.load(RUN).predict`` takes: paths, PIL images and numpy arrays."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
from PIL import Image

from lanner.data.images import is_image_file, open_image, upright_rgb
from lanner.data.remote import is_url, local_copy
from lanner.errors import DataError


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (searched recursively), glob patterns and URLs of files or folders (fetched into
    lanner's cache, :mod:`lanner.data.remote`) -> image paths, in a stable order."""
    paths: list[Path] = []
    for item in inputs:
        p = local_copy(item) if is_url(item) else Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.rglob("*") if q.is_file() and is_image_file(q))
        elif p.is_file():
            paths.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            if not matches:
                raise DataError(f"{item}: no such file, folder or glob match")
            paths += [m for m in matches if m.is_file() and is_image_file(m)]
    return list(dict.fromkeys(paths))


def as_images(x) -> tuple[list[Image.Image], bool]:
    """A path, a PIL image, an HxWx3 (or HxW) uint8 array, or a list of them -> upright RGB images,
    and whether ``x`` was a single image (so the caller returns one result, not a list)."""
    if isinstance(x, list | tuple):
        return [_as_image(item) for item in x], False
    return [_as_image(x)], True


def _as_image(x) -> Image.Image:
    if isinstance(x, str | Path):
        return open_image(x)
    if isinstance(x, Image.Image):
        return upright_rgb(x)
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8 or x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[2] != 3):
            raise DataError(f"an image array must be HxWx3 (or HxW) uint8; got shape {x.shape} {x.dtype}")
        return Image.fromarray(x).convert("RGB")
    raise DataError(f"cannot predict on a {type(x).__name__}: give a path, a PIL image or a numpy array")
