"""One training process per run directory: ``RUN/run.lock`` names the process that owns the run.

Two processes writing the same run (a second ``lanner train --run R`` or ``lanner resume R`` while
the first still trains) would interleave checkpoints and history rows into a run that is neither.
So train, resume and lr-find take the lock when their session starts (process 0 only under DDP)
and give it back when it ends, however it ends. A second process is refused, told the owner's pid
and host. A lock whose process is gone (``kill -9``, a power cut: nothing ran to remove it) is
stale: on the same host that is known for sure (no such pid), and the lock is taken over with a
note. A lock from another host (a shared file system) is never taken over: lanner cannot tell
whether that process lives, so the message says which file to remove once the user knows.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from lanner.engine.setup import now
from lanner.errors import RunInUseError
from lanner.rundir import RunDir


@dataclass(frozen=True)
class LockOwner:
    """Who holds a run: written into the lock file as JSON."""

    pid: int
    host: str
    started: str = ""
    command: str = ""

    @classmethod
    def this_process(cls) -> LockOwner:
        return cls(os.getpid(), socket.gethostname(), now(), " ".join(["lanner", *sys.argv[1:]]))

    def is_this_process(self) -> bool:
        return self.pid == os.getpid() and self.host == socket.gethostname()

    def may_be_alive(self) -> bool:
        """False only when we know it is gone: same host, no such pid."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)  # signal 0: existence check, nothing is sent
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's live process
            return True
        return True

    def describe(self) -> str:
        since = f" since {self.started}" if self.started else ""
        what = f" ({self.command})" if self.command else ""
        return f"process {self.pid} on host {self.host}{since}{what}"


def read_owner(lock: Path) -> LockOwner | None:
    """The owner a lock file names; None when there is none or it cannot be read (a half-written
    lock from a process killed while writing it is stale too)."""
    try:
        values = json.loads(lock.read_text())
        return LockOwner(
            int(values["pid"]), str(values["host"]), values.get("started", ""), values.get("command", "")
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_owner(path: Path) -> None:
    """This process, as the owner a lock names."""
    path.write_text(json.dumps(asdict(LockOwner.this_process())))


def read_settled_owner(lock: Path, young_s: float = 5.0, waits: int = 20) -> LockOwner | None:
    """:func:`read_owner`, waiting a moment for a lock just created and not yet written (only
    where the file system has no hard links); an unreadable lock older than that is stale."""
    for _ in range(waits):
        owner = read_owner(lock)
        try:
            just_created = time.time() - lock.stat().st_mtime < young_s
        except OSError:
            return owner
        if owner is not None or not just_created:
            return owner
        time.sleep(0.05)
    return read_owner(lock)


def refuse_if_in_use(run: RunDir) -> None:
    """A RunInUseError naming the owner when another live process holds ``run`` (nothing is taken)."""
    owner = read_owner(run.lock) if run.lock.exists() else None
    if owner is not None and not owner.is_this_process() and owner.may_be_alive():
        raise RunInUseError(_in_use_message(run, owner))


def _in_use_message(run: RunDir, owner: LockOwner) -> str:
    return (
        f"{run.path}: in use by {owner.describe()}; wait for it to finish (or stop it). "
        f"If that process is not lanner training this run, remove {run.lock}"
    )


class RunLock:
    """The lock of one run, held by this process between :meth:`acquire` and :meth:`release`."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.held = False

    def acquire(self, console: Console) -> RunLock:
        """Take the lock, taking over a stale one with a note; a RunInUseError when it is held."""
        for _ in range(3):  # a stale lock removed here may be re-taken by a racing process first
            if self._create():
                self.held = True
                atexit.register(self.release)  # a backstop: every way out of the session releases too
                return self
            self._clear_stale(console)
        raise RunInUseError(
            f"{self.run.path}: could not take {self.run.lock}; another process keeps taking it"
        )

    def release(self) -> None:
        """Give the lock back (only if it still names this process); safe to call more than once."""
        if not self.held:
            return
        self.held = False
        owner = read_owner(self.run.lock)
        if owner is not None and owner.is_this_process():
            with contextlib.suppress(OSError):
                self.run.lock.unlink()

    def _create(self) -> bool:
        """Put the lock in place if there is none; of two processes racing, exactly one wins.

        The owner is written to a file of this process first and hard-linked as the lock: link
        fails when the lock exists, and a lock that exists is whole. (Created empty, then written,
        a racing process could read it empty, call it stale and take a live run over.)
        """
        # Named by host and pid: on a shared file system, processes of other hosts may share the pid.
        written = self.run.lock.with_name(f".{self.run.lock.name}.{socket.gethostname()}.{os.getpid()}")
        write_owner(written)
        try:
            os.link(written, self.run.lock)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: create exclusively, then write
            return self._create_in_place()
        finally:
            with contextlib.suppress(OSError):
                written.unlink()
        return True

    def _create_in_place(self) -> bool:
        try:
            fd = os.open(self.run.lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        os.close(fd)
        write_owner(self.run.lock)
        return True

    def _clear_stale(self, console: Console) -> None:
        owner = read_settled_owner(self.run.lock)
        if owner is not None and owner.may_be_alive() and not owner.is_this_process():
            raise RunInUseError(_in_use_message(self.run, owner))
        # This process's own lock (an earlier session in it that failed) is no one else's either.
        if owner is not None and not owner.is_this_process():
            console.print(f"[yellow]note[/]: taking over {self.run.lock}: {owner.describe()} is gone")
        with contextlib.suppress(FileNotFoundError):
            self.run.lock.unlink()
