"""Shared fixtures. Prefect's settings are fixed before anything imports prefect."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from crawl2score.runtime import configure_prefect_env

REPO = Path(__file__).resolve().parent.parent
configure_prefect_env(tempfile.mkdtemp(prefix="crawl2score-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _shared_dir() -> Path:
    return Path(os.environ.get("CRAWL2SCORE_SHARED_DIR", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _shared_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder not found at {path} (set CRAWL2SCORE_SHARED_DIR)")
    return path


@pytest.fixture(scope="session")
def prefect_harness():
    """One throwaway Prefect server (SQLite) for the whole session; use it in tests that run flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
