"""Shared fixtures. Tests never touch the network; real data comes from ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LANNER_SHARED_DATA", REPO.parent / "shared" / "data"))

# Keep test runs offline even if some library tries to reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# `make test` runs the suite in several pytest-xdist workers: each worker, and every lanner process
# its tests start, gets its share of the cores (two workers of two threads on two cores would only
# fight over them).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _workers))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets of ../shared/data (present in CI; a clear failure if missing)."""
    assert SHARED_DATA.is_dir(), f"real test data not found at {SHARED_DATA} (set LANNER_SHARED_DATA)"
    return SHARED_DATA
