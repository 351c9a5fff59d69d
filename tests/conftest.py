"""Shared fixtures. Tests never touch the network; real data comes from ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LANNER_SHARED_DATA", REPO.parent / "shared" / "data"))

# Keep test runs offline even if some library tries to reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets of ../shared/data (present in CI; a clear failure if missing)."""
    assert SHARED_DATA.is_dir(), f"real test data not found at {SHARED_DATA} (set LANNER_SHARED_DATA)"
    return SHARED_DATA
