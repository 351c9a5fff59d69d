"""Checkpoints: everything needed to resume or to predict, written atomically, read weights-only."""

from __future__ import annotations

import json
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
    """Load with ``weights_only=True``: a checkpoint can never run code on the machine that opens it.
    A folder from ``lanner export --format safetensors`` loads too (safetensors cannot hold code)."""
    path = Path(path)
    if is_safetensors_folder(path):
        return _load_folder(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from e


def find_checkpoint(run: str | Path, which: str = "best") -> Path:
    """Resolve a run directory (or a checkpoint file, or an exported safetensors folder) to a checkpoint."""
    run = Path(run)
    return run if run.is_file() or is_safetensors_folder(run) else RunDir(run).find_checkpoint(which)


def is_safetensors_folder(path: Path) -> bool:
    return (path / "model.safetensors").is_file() and (path / "config.json").is_file()


def _load_folder(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        described = json.loads((path / "config.json").read_text())["lanner"]
        return {**described, "state_dict": load_file(str(path / "model.safetensors"))}
    except (KeyError, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a folder lanner exported ({type(e).__name__}: {e})") from e
