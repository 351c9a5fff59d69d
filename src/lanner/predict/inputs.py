"""What `lanner predict` is pointed at: files, folders and globs, expanded to image paths."""

from __future__ import annotations

import glob
from pathlib import Path

from lanner.data.images import is_image_file
from lanner.errors import DataError


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (searched recursively) and glob patterns -> image paths, in a stable order."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
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
