"""Every file an annotation names must lie inside the dataset root: one rule, used by every reader.

Annotation files come from strangers (downloads, exports, colleagues), and each format lets them
name other files: COCO ``file_name``, VOC ``<filename>``, Labelme ``imagePath``, CSV path columns,
YOLO ``data.yaml`` paths and image list files. A name like ``../../../../etc/passwd``, an absolute
path, or a symlink inside the dataset pointing elsewhere would make lanner read (and train on, or
copy during ``convert``) a file the user never handed over. So a path read from an annotation is
only used when, after following symlinks (:meth:`Path.resolve`), it lies inside the **dataset
root**; otherwise the entry is refused with an :class:`~lanner.data.records.Issue` naming the
annotation file and the path, and the file is never opened (``strict=True``: a ``DataError``).

The dataset root is:

* the folder the user gave, when they gave a folder;
* the folder holding the annotation file, when they gave a file (``coco.json`` beside its
  ``images/`` folder, a labelme JSON beside its image, a ``data.yaml`` at the top of its dataset);
* except that a file inside a folder named ``annotations`` (any case: the official COCO layout
  ``annotations/instances_val2017.json`` beside ``val2017/``, and VOC's ``Annotations/``) has the
  folder above as root, because that is where those layouts keep the images.

``allow_outside_root=True`` (``read_dataset(..., allow_outside_root=True)``) is the explicit
opt-in for trusted files that point elsewhere on purpose, such as a COCO JSON or CSV that lanner
wrote "pointing at the images where they are".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lanner.errors import DataError

# Folders that conventionally sit beside the image folders and hold only annotation files.
ANNOTATION_FOLDERS = frozenset({"annotations"})

OPT_IN_HINT = "pass allow_outside_root=True (--allow-outside-root) if you trust this annotation file"


class OutsideRootError(DataError):
    """A path read from an annotation resolves outside the dataset root."""


def dataset_root(path: str | Path) -> Path:
    """The root a dataset given as ``path`` (a folder or an annotation file) may read files from."""
    path = Path(path)
    if path.is_dir():
        return path
    folder = path.parent
    return folder.parent if folder.name.lower() in ANNOTATION_FOLDERS else folder


def _resolved(path: Path) -> Path | None:
    """``path`` with every symlink followed; None for a symlink loop or an unreadable component."""
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):  # RuntimeError: symlink loop (Python < 3.13); ValueError: NUL
        return None


def is_file(path: Path) -> bool:
    """``path.is_file()`` that answers False for names the OS refuses (too long, NUL, no access)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def is_dir(path: Path) -> bool:
    """``path.is_dir()`` that answers False for names the OS refuses (too long, NUL, no access)."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class Confinement:
    """The dataset root a reader may open files under (everything, with ``allow_outside``)."""

    root: Path
    allow_outside: bool = False

    @classmethod
    def of(cls, dataset: str | Path, allow_outside_root: bool = False) -> Confinement:
        return cls(dataset_root(dataset), allow_outside_root)

    def contains(self, path: str | Path) -> bool:
        if self.allow_outside:
            return True
        resolved, root = _resolved(Path(path)), _resolved(self.root)
        return resolved is not None and root is not None and resolved.is_relative_to(root)

    def refusal(self, path: str | Path) -> str:
        """The problem text of an Issue (or DataError) refusing ``path``."""
        return f"{path} resolves outside the dataset root {self.root}; refused ({OPT_IN_HINT})"

    def check(self, path: str | Path, source: str | Path) -> Path:
        """``path`` when it lies inside the root; else an :class:`OutsideRootError` naming ``source``."""
        if not self.contains(path):
            raise OutsideRootError(f"{source}: {self.refusal(path)}")
        return Path(path)


def confine(
    path: str | Path, root: str | Path, *, source: str | Path | None = None, allow_outside_root: bool = False
) -> Path:
    """``path`` when it resolves (symlinks followed) inside ``root``; else :class:`OutsideRootError`.

    ``source`` (the annotation file that named ``path``) starts the error message.
    """
    return Confinement(Path(root), allow_outside_root).check(path, source or path)
