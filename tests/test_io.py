"""lanner._io: atomic writes get normal permissions, fail with a clear error, and clean up after them."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lanner._io import ORPHAN_AGE_S, sweep_temp_files, write_atomic, write_json, write_text
from lanner.errors import LannerError, WriteError


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_files_get_the_users_umask(tmp_path, umask_022):
    path = write_json(tmp_path / "metrics.json", {"a": 1})
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    os.umask(0o077)
    assert stat.S_IMODE(write_text(tmp_path / "private.txt", "x").stat().st_mode) == 0o600


def _full_disk(tmp: Path) -> None:
    with open(tmp, "wb") as f:
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_names_the_path_and_space_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = write_text(tmp_path / "history.csv", "old content\n")
    with pytest.raises(WriteError, match=r"history\.csv: no space left .*bytes free") as info:
        write_atomic(target, _full_disk)
    assert isinstance(info.value, LannerError)
    assert target.read_text() == "old content\n" and _temps(tmp_path) == []

    def no_space(self, data):  # the OS failure, injected where the bytes hit the disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", no_space)
    with pytest.raises(WriteError, match=r"bytes free, 9 bytes needed"):
        write_text(target, "new text\n")
    assert target.read_text() == "old content\n" and _temps(tmp_path) == []


READ_ONLY_FOLDER_CHECK = """
import sys
from pathlib import Path
from lanner._io import write_text
from lanner.errors import WriteError
folder = Path(sys.argv[1])
try:
    write_text(folder / "a.txt", "new")
except WriteError as e:
    print("WriteError:", e)
"""


def test_read_only_folder_raises_a_write_error(tmp_path):
    """A real read-only folder; as root (CI), the write runs as the unprivileged user ``nobody``, since
    root writes into read-only folders anyway."""
    shared = Path(tempfile.mkdtemp(prefix="lanner-ro-"))  # tmp_path is private to root
    folder = shared / "ro"
    folder.mkdir()
    write_text(folder / "a.txt", "old")
    folder.chmod(0o555)
    shared.chmod(0o755)
    as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    src = str(Path(__file__).resolve().parents[1] / "src")
    try:
        done = subprocess.run(
            [*as_user, sys.executable, "-c", READ_ONLY_FOLDER_CHECK, str(folder)],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": src}, timeout=120,
        )  # fmt: skip
    finally:
        folder.chmod(0o755)
    assert re.search(r"WriteError: .*a\.txt: cannot write here", done.stdout), done.stdout + done.stderr
    assert (folder / "a.txt").read_text() == "old" and _temps(folder) == []
    shutil.rmtree(shared)


def test_read_only_filesystem_raises_a_write_error(tmp_path):
    target = write_text(tmp_path / "a.txt", "old")

    def read_only(tmp: Path) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp))

    with pytest.raises(WriteError, match=r"a\.txt: cannot write here \(Read-only file system\)"):
        write_atomic(target, read_only)
    assert target.read_text() == "old" and _temps(tmp_path) == []


def test_other_errors_of_the_writer_pass_through_and_clean_up(tmp_path):
    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise ValueError("not serialisable")

    with pytest.raises(ValueError, match="not serialisable"):
        write_atomic(tmp_path / "x.json", broken)
    assert _temps(tmp_path) == [] and not (tmp_path / "x.json").exists()


def test_orphans_of_a_killed_write_are_swept_on_the_next_write(tmp_path):
    old = time.time() - ORPHAN_AGE_S - 5
    orphan = tmp_path / ".best.ckpt.1a2b3c4d.tmp"  # what a kill -9 during write_atomic leaves
    in_flight = tmp_path / ".best.ckpt.5e6f7a8b.tmp"  # another process writing right now
    other = tmp_path / ".last.ckpt.9c0d1e2f.tmp"
    for p in (orphan, in_flight, other):
        p.write_bytes(b"x" * 10)
    os.utime(orphan, (old, old))
    os.utime(other, (old, old))
    write_text(tmp_path / "best.ckpt", "weights")
    assert _temps(tmp_path) == [in_flight.name, other.name]
    assert sweep_temp_files(tmp_path) == 1 and _temps(tmp_path) == [in_flight.name]
    assert sweep_temp_files(tmp_path, min_age_s=0) == 1 and _temps(tmp_path) == []
    assert (tmp_path / "best.ckpt").read_text() == "weights"
