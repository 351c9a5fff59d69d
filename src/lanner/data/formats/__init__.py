"""Dataset formats: one module per format, all reading into and writing out of :class:`Dataset`.

Each format registers a reader with a ``sniff(path) -> bool`` that recognises its layout, so
``read_dataset(path)`` finds the format by itself. Detection formats are tried before class
folders, because an image folder with annotation files next to it is not a classification set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lanner.data.records import Dataset
from lanner.errors import DataError


@dataclass(frozen=True)
class Format:
    name: str
    sniff: Callable[[Path], bool]
    read: Callable[..., Dataset]
    write: Callable[[Dataset, Path], None] | None = None
    priority: int = 50  # lower is tried first


_FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    if fmt.name in _FORMATS:
        raise ValueError(f"format {fmt.name!r} is already registered")
    _FORMATS[fmt.name] = fmt
    return fmt


def list_formats() -> list[str]:
    _load_builtin()
    return sorted(_FORMATS)


def get_format(name: str) -> Format:
    _load_builtin()
    try:
        return _FORMATS[name]
    except KeyError:
        raise DataError(f"unknown format {name!r}; known: {', '.join(sorted(_FORMATS))}") from None


def detect_format(path: str | Path) -> str:
    """The name of the first registered format whose sniffer recognises ``path``."""
    _load_builtin()
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    for fmt in sorted(_FORMATS.values(), key=lambda f: f.priority):
        if fmt.sniff(path):
            return fmt.name
    raise DataError(
        f"{path}: cannot tell the dataset format; expected class folders, a CSV, COCO JSON, "
        f"Pascal VOC, YOLO or Labelme (or pass --format; known: {', '.join(sorted(_FORMATS))})"
    )


def read_dataset(
    path: str | Path,
    format: str | None = None,
    *,
    strict: bool = False,
    allow_outside_root: bool = False,
    **kwargs,
) -> Dataset:
    """Read any supported layout into a :class:`Dataset`, validating as it reads.

    Files named inside annotations must lie inside the dataset root (see :mod:`lanner.data.paths`)
    unless ``allow_outside_root``; ``strict`` turns every problem into a :class:`DataError`.
    Other keywords (``classes=``, ``on_unknown_class=``) go to the reader.
    """
    name = format or detect_format(path)
    return get_format(name).read(Path(path), strict=strict, allow_outside_root=allow_outside_root, **kwargs)


def write_dataset(dataset: Dataset, format: str, out: str | Path) -> Path:
    fmt = get_format(format)
    if fmt.write is None:
        raise DataError(f"format {format!r} cannot be written")
    out = Path(out)
    fmt.write(dataset, out)
    return out


_loaded = False


def _load_builtin() -> None:
    """Import the built-in format modules once; each registers itself on import."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for mod in ("folder", "csv", "csv_boxes", "coco", "voc", "yolo", "labelme"):
        try:
            importlib.import_module(f"lanner.data.formats.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"lanner.data.formats.{mod}":
                raise
