"""Process environment for Prefect: a project-local home, no telemetry, loopback only.

Must run before `prefect` is first imported, because Prefect reads its settings at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "true",
}


def configure_prefect_env(prefect_home: str | os.PathLike[str] | None = None, api_url: str | None = None) -> None:
    """Set Prefect's environment unless the user already did (their settings win)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    home = Path(prefect_home or os.environ.get("PREFECT_HOME") or Path.cwd() / ".prefect").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(home))
    # Results persisted on local disk so cached stages survive across runs (keys live in .stage.json too).
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(home / "storage"))
    if api_url:
        os.environ.setdefault("PREFECT_API_URL", api_url)
