"""Errors lanner raises for bad input: each names the file and the problem, and how to fix it."""


class LannerError(Exception):
    """Base class; the CLI prints these as one clear line instead of a traceback."""


class DataError(LannerError):
    """A dataset, annotation file or image cannot be used as it is."""


class ConfigError(LannerError):
    """An option or config key is wrong."""


class CheckpointError(LannerError):
    """A run directory or checkpoint is missing or unreadable."""


class WriteError(LannerError):
    """A file could not be written: disk full, read-only folder, no permission."""


class RunInUseError(LannerError):
    """Another process is training in the run directory (its ``run.lock`` names it)."""


class Interrupted(Exception):
    """Training stopped on Ctrl-C / SIGTERM after saving a resumable checkpoint."""

    hint: str | None = None  # the command that continues (the CLI prints it): set by who knows it


class Terminated(BaseException):
    """SIGTERM outside training (where the trainer turns it into a clean stop and ``Interrupted``).

    A BaseException like KeyboardInterrupt, so that ``except Exception`` in the library cannot
    swallow it; the CLI exits 143 (128 + SIGTERM) on it.
    """
