"""Atomic file writes: a crash or Ctrl-C mid-write never leaves a truncated checkpoint or output.

Each write goes to ``.NAME.<random>.tmp`` beside the target and is renamed over it in one step.
The temp file is created with mode 0666 minus the user's umask, so outputs get the permissions
any other program would give them. A write that fails (disk full, read-only folder) raises a
:class:`WriteError` naming the path (and the space needed, when known), removes its temp file and
leaves the previous file untouched. Temp files left by a killed process (``kill -9``: nothing ran
to remove them) are swept the next time the same target is written, once they are older than
:data:`ORPHAN_AGE_S`; :func:`sweep_temp_files` sweeps a whole folder (e.g. a run directory when a
run starts or resumes).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lanner.errors import WriteError

# A temp file untouched this long belongs to a dead writer: a live one (even a multi-GB torch.save)
# keeps writing to it. Younger ones may be another process's write in flight and are left alone.
ORPHAN_AGE_S = 60.0
TEMP_SUFFIX = ".tmp"
_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _temp_glob(target_name: str) -> str:
    return f".{target_name}.*{TEMP_SUFFIX}"


def sweep_temp_files(directory: str | Path, *, min_age_s: float = ORPHAN_AGE_S, pattern: str = "") -> int:
    """Remove lanner's orphaned temp files (``.NAME.*.tmp``) in ``directory``; returns how many.

    Only files older than ``min_age_s`` go, so a write in flight in another process survives;
    ``pattern`` narrows the sweep to one target's temp files.
    """
    directory, removed = Path(directory), 0
    if not directory.is_dir():
        return 0
    now = time.time()
    for tmp in directory.glob(pattern or f".*{TEMP_SUFFIX}"):
        try:
            if tmp.is_file() and now - tmp.stat().st_mtime >= min_age_s:
                tmp.unlink()
                removed += 1
        except OSError:
            pass  # gone already, or not ours to remove: either way nothing to do
    return removed


def _create_temp(path: Path) -> Path:
    """A new, empty temp file beside ``path``; ``os.open`` applies the umask to mode 0666."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temp file name", str(path.parent))


def _write_error(path: Path, error: OSError, size_hint: int | None) -> WriteError:
    if error.errno in _FULL:
        try:
            free = f"{shutil.disk_usage(path.parent).free:,} bytes free"
        except OSError:
            free = "free space unknown"
        needed = f", {size_hint:,} bytes needed" if size_hint is not None else ""
        return WriteError(f"{path}: no space left on the device ({free}{needed}); free some space and retry")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WriteError(
            f"{path}: cannot write here ({error.strerror}); the folder is read-only or not yours"
        )
    return WriteError(f"{path}: cannot write ({error.strerror or error})")


@contextmanager
def atomic_path(path: str | Path, *, size_hint: int | None = None):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    ``size_hint`` (bytes about to be written) goes into the disk-full message when known.
    """
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_temp_files(path.parent, pattern=_temp_glob(path.name))
        tmp = _create_temp(path)
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise _write_error(path, e, size_hint) from e
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def write_atomic(path: str | Path, writer: Callable[[Path], Any], *, size_hint: int | None = None) -> Path:
    """Call ``writer(tmp_path)`` and move the result into place atomically."""
    with atomic_path(path, size_hint=size_hint) as tmp:
        writer(tmp)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    data = text.encode("utf-8")
    return write_atomic(path, lambda p: p.write_bytes(data), size_hint=len(data))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
