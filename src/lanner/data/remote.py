"""DATA given as a URL (``https://``, ``s3://``, ``gs://``, ``memory://``, anything fsspec reads): a local
mirror of it under lanner's cache, which every reader then reads as it reads a folder on disk.

Readers, the decoded-pixel cache and the saved split all need real files (PIL opens them, the cache
keys on their size and mtime), so rather than teach each of them a second kind of path, a URL is
turned into a folder once: every file under the dataset's root URL is listed and downloaded through
fsspec into ``<cache>/remote/<key>/data`` (``<cache>``: ``$LANNER_CACHE`` or ``~/.cache/lanner``;
``<key>``: a hash of the root URL), and the local path of what DATA names inside it is returned.

* The root is the URL itself for a folder; for a file (a COCO JSON, a CSV) it is the folder holding
  it, or the one above a folder named ``annotations``: the rule of :mod:`lanner.data.paths` for local
  files, so the images an annotation names beside it are fetched with it, and a ``../`` in an
  annotation is refused by the same confinement as on disk (it points outside the mirror).
* A listed name that would land outside the root (``..`` in an HTTP index page's link) is refused.
* A mirror is downloaded into a temp folder and renamed into place when complete, so it is either
  whole or absent; a later read (``lanner eval RUN``, ``resume``, a second ``train``) reuses it
  without asking the server. Delete the folder to fetch the data again.
* HTTP(S) folders are listed from their HTML index pages (fsspec's ``HTTPFileSystem``, which reads
  what ``python -m http.server``, nginx ``autoindex`` or Apache produce).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

import fsspec
from fsspec.callbacks import Callback
from fsspec.registry import known_implementations
from rich.console import Console

from lanner._io import write_json
from lanner._progress import progress_bar
from lanner.data.cache import default_cache_dir
from lanner.data.paths import ANNOTATION_FOLDERS
from lanner.errors import DataError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_LOCAL = {"file", "local"}
SOURCE_FILE = "source.json"  # beside the mirror's data/ folder, never inside it (a sniffer would read it)
_announced: set[str] = set()  # mirrors this process has named once already


def is_url(data: object) -> bool:
    """Whether ``data`` is a URL of a remote (or in-memory) filesystem; ``file://`` is local."""
    match = _SCHEME.match(data) if isinstance(data, str) else None
    return match is not None and match.group(1).lower() not in _LOCAL


def local_dataset(data: str | Path) -> Path:
    """The local path to read DATA from: itself when local, else its place in the mirror of the
    dataset's root URL (downloaded on first use)."""
    if not is_url(data):
        return _local_path(data)
    fs, path = _filesystem(data)
    kept = _kept(fs, path, data, _dataset_root)
    if kept is not None:
        return kept
    with _remote_errors(data):
        fs.info(path)  # a missing file or folder fails here, naming the URL, before anything is listed
        if data.endswith("/") or fs.isdir(path):
            return _mirror(fs, path.rstrip("/"), data)
        root = _dataset_root(path)
        return _named(_mirror(fs, root, data), _local_name(fs, path[len(root) + 1 :], data), data)


def local_copy(url: str) -> Path:
    """The local copy of exactly what ``url`` names, a file or a folder (``lanner predict`` inputs)."""
    fs, path = _filesystem(url)
    kept = _kept(fs, path, url, _parent, alone=True)
    if kept is not None:
        return kept
    with _remote_errors(url):
        fs.info(path)
        if url.endswith("/") or fs.isdir(path):
            return _mirror(fs, path.rstrip("/"), url)
        folder = _parent(path)
        name = _local_name(fs, path[len(folder) + 1 :], url)
        return _named(_mirror(fs, folder, url, only=[(path, name)]), name, url)


def is_mirrored(url: str) -> bool:
    """Whether the dataset at ``url`` was fetched into a mirror already; asks no server."""
    fs, path = _filesystem(url)
    return _find_kept(fs, path, url, _dataset_root)[1] is not None


def _kept(fs, path: str, url: str, root_of, alone: bool = False) -> Path | None:
    """What ``url`` names in a mirror made earlier, found without asking the server (so that eval and
    resume of a run trained on a URL work offline), or None. ``alone``: a file's mirror holds it only."""
    mirror, found = _find_kept(fs, path, url, root_of, alone)
    if found is not None:
        _announce(found, f"data: {url} as fetched into {found} (delete {mirror} to fetch it again)")
    return found


def _find_kept(fs, path: str, url: str, root_of, alone: bool = False) -> tuple[Path, Path | None]:
    """The mirror ``url`` would be kept in, and what it names there if that mirror exists."""
    mirror, found = _mirror_dir(fs, path.rstrip("/")), None
    if (mirror / SOURCE_FILE).is_file():
        found = mirror / "data"  # the URL of a folder
    elif not path.endswith("/"):  # the URL of a file, in the mirror of its folder
        root = root_of(path)
        name = _local_name(fs, path[len(root) + 1 :], url)
        mirror = _mirror_dir(fs, root, [name] if alone else [])
        found = mirror / "data" / name if (mirror / SOURCE_FILE).is_file() else None
    return mirror, (found if found is not None and found.exists() else None)


def _named(mirror: Path, name: str, url: str) -> Path:
    """``name`` in a fresh mirror; a file the folder's listing did not show is an error naming ``url``."""
    if not (mirror / name).is_file():
        raise DataError(f"{url}: not among the files listed in its folder; cannot fetch it")
    return mirror / name


def remote_cache_dir() -> Path:
    return default_cache_dir() / "remote"


def _local_path(data: str | Path) -> Path:
    if isinstance(data, str) and _SCHEME.match(data):
        return Path(unquote(urlparse(data).path))  # file:///data/pets -> /data/pets
    return Path(data)


def _parent(path: str) -> str:
    return posixpath.dirname(path).rstrip("/")


def _dataset_root(path: str) -> str:
    """The folder a remote annotation file may name files under (as :func:`.paths.dataset_root` says)."""
    folder = posixpath.dirname(path)
    if posixpath.basename(folder).lower() in ANNOTATION_FOLDERS:
        folder = posixpath.dirname(folder)
    return folder.rstrip("/")


# ------------------------------------------------------------------------------------ fsspec access
def _filesystem(url: str):
    """(fsspec filesystem, path in it) for ``url``; a scheme whose package is missing: what to install."""
    scheme = _SCHEME.match(url).group(1).lower()
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        package = known_implementations.get(scheme, {}).get("class", scheme).split(".")[0]
        raise DataError(f"{url}: cannot read {scheme}:// URLs: {e} (pip install {package})") from None
    except ValueError as e:
        raise DataError(
            f"{url}: {e}; fsspec reads {', '.join(sorted(fsspec.available_protocols()))}"
        ) from None


def _client_errors() -> tuple[type[BaseException], ...]:
    """aiohttp's errors (an HTTP status other than 404, a broken connection), when it is installed."""
    try:
        import aiohttp
    except ImportError:
        return ()
    return (aiohttp.ClientError,)


@contextmanager
def _remote_errors(url: str):
    """Unreachable hosts, missing files and refused requests as a DataError naming ``url``."""
    try:
        yield
    except FileNotFoundError as e:
        cause = e.__cause__  # fsspec's HTTP info says "not found" for any failure; the cause tells which
        if cause is None or getattr(cause, "status", None) == 404:
            raise DataError(f"{url}: not found") from None
        raise DataError(f"{url}: cannot read it ({type(cause).__name__}: {cause})") from None
    except (OSError, ValueError, *_client_errors()) as e:
        raise DataError(f"{url}: cannot read it ({type(e).__name__}: {e})") from None


def _is_http(fs) -> bool:
    return any(p in ("http", "https") for p in _protocols(fs))


def _protocols(fs) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _local_name(fs, relative: str, url: str) -> str:
    """A listed name below the root as a relative local path; a name that would leave the root is refused."""
    name = unquote(relative) if _is_http(fs) else relative  # index pages link to percent-encoded names
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise DataError(f"{url}: the listing names {relative!r}, which is not below the dataset URL; refused")
    return name


# ------------------------------------------------------------------------------------------ mirrors
def _mirror_dir(fs, root: str, names: list[str] | tuple = ()) -> Path:
    """Where the mirror of the remote folder ``root`` (of only the files ``names`` in it) is kept."""
    key = json.dumps([fs.unstrip_protocol(root), list(names)])
    return remote_cache_dir() / hashlib.sha1(key.encode()).hexdigest()[:16]


def _mirror(fs, root: str, url: str, *, only: list[tuple[str, str]] | None = None) -> Path:
    """Download the remote folder ``root`` (or only the files ``only`` of it: (remote path, local name))
    into its mirror, replacing an older one; the mirror's data folder."""
    source = fs.unstrip_protocol(root)
    final = _mirror_dir(fs, root, [name for _, name in only or []])
    stale = final.exists()  # a mirror that lacks the file DATA names: replaced (else: one being made)
    files = only if only is not None else _listed(fs, root, url)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a killed fetch of this same process id
    try:
        _download(fs, files, tmp / "data", source)
        fetched = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json(tmp / SOURCE_FILE, {"url": source, "files": len(files), "fetched": fetched})
        _publish(tmp, final, replace=stale)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _announce(final / "data", f"data: fetched {len(files)} files of {source} into {final / 'data'}")
    return final / "data"


def _listed(fs, root: str, url: str) -> list[tuple[str, str]]:
    """(remote path, local name) of every file under ``root``; a name outside it is refused."""
    prefix = root + "/"
    try:  # an HTTP folder's index page is at its URL with the slash (without, servers redirect or 404)
        found = fs.find(prefix if _is_http(fs) else root)
    except FileNotFoundError as e:
        raise DataError(
            f"{url}: cannot list {fs.unstrip_protocol(root)} ({e}), so its files cannot be fetched "
            "(an HTTP server must serve index pages of its folders)"
        ) from None
    files = []
    for path in found:
        if not path.startswith(prefix):
            raise DataError(f"{url}: the listing names {path}, which is not below the dataset URL; refused")
        relative = path[len(prefix) :]
        if _is_http(fs) and ("?" in relative or "#" in relative):
            continue  # an index page's sort or anchor links, not files
        files.append((path, _local_name(fs, relative, url)))
    if not files:
        raise DataError(f"{url}: no files under {fs.unstrip_protocol(root)}")
    return files


class _Advance(Callback):
    """fsspec's transfer callback (one step per file) driving lanner's progress bar."""

    def __init__(self, advance_to) -> None:
        super().__init__()
        self._advance_to = advance_to

    def call(self, *args, **kwargs) -> None:
        self._advance_to(self.value)


def _download(fs, files: list[tuple[str, str]], into: Path, source: str) -> None:
    """Fetch ``files`` (concurrently where the filesystem can) to their local names under ``into``."""
    targets = []
    for _, name in files:
        target = into / name  # name has no "..", no absolute part (_local_name): it stays under into
        target.parent.mkdir(parents=True, exist_ok=True)
        targets.append(str(target))
    with progress_bar(f"fetching {source}", len(files), _stderr()) as advance_to:
        fs.get([path for path, _ in files], targets, callback=_Advance(advance_to))
    missing = [target for target in targets if not os.path.isfile(target)]
    if missing:
        raise DataError(f"{source}: {len(missing)} listed file(s) did not arrive, e.g. {missing[0]}")


def _publish(tmp: Path, final: Path, replace: bool) -> None:
    """Rename the complete download into place in one step. A stale mirror there (``replace``) is moved
    aside first; one that another process (a rank of the same training) published meanwhile is kept."""
    if replace and final.exists():
        aside = final.with_name(f".{final.name}.{os.getpid()}.old")
        os.replace(final, aside)
        shutil.rmtree(aside, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / SOURCE_FILE).is_file():
            raise


def _stderr() -> Console:
    return Console(stderr=True)


def _announce(mirror: Path, text: str) -> None:
    """Say once per process where a URL's data is read from (stderr: stdout may be --json)."""
    if str(mirror) not in _announced:
        _announced.add(str(mirror))
        _stderr().print(text, highlight=False, soft_wrap=True, markup=False)
