"""Checkpoints: everything needed to resume or to predict, written atomically, read weights-only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lanner import __version__
from lanner._io import write_atomic
from lanner.errors import CheckpointError
from lanner.rundir import RunDir


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plain containers and tensors only) so that a crash never truncates it."""
    state = {"lanner_version": __version__, **state}
    return write_atomic(path, lambda p: torch.save(state, p))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with ``weights_only=True``: a checkpoint can never run code on the machine that opens it."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from e


def find_checkpoint(run: str | Path, which: str = "best") -> Path:
    """Resolve a run directory (or a checkpoint file) to a checkpoint file."""
    run = Path(run)
    return run if run.is_file() else RunDir(run).find_checkpoint(which)
