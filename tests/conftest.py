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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `crawl2score server` on a free loopback port with its own PREFECT_HOME, one per test module.

    `env` is the environment a user's shell would have: none of this process's PREFECT_ settings.
    """
    import json
    import signal
    import subprocess
    import sys

    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    cmd = [sys.executable, "-m", "crawl2score", "server", "--background", "--port", str(port)]
    out = subprocess.run(
        [*cmd, "--set", f"prefect.home={home}"], env=env, capture_output=True, text=True, timeout=180, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads((home / "server.json").read_text())
    yield {"home": home, "port": port, "api_url": info["api_url"], "env": env}
    # Stopped as a user stops it; the group kill after it only cleans up if `--stop` failed.
    stop = subprocess.run(
        [*cmd[:4], "--stop", "--set", f"prefect.home={home}"], env=env, capture_output=True, text=True, cwd=REPO
    )
    try:
        os.killpg(os.getpgid(info["pid"]), signal.SIGTERM)
    except ProcessLookupError:
        pass
    assert stop.returncode == 0 and not (home / "server.json").exists(), stop.stderr[-2000:]
