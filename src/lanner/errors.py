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
