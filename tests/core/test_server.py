"""`crawl2score server` serves the API and UI on loopback; `deploy` creates pools and deployments on it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_server_answers_on_loopback(server) -> None:
    assert server["api_url"] == f"http://127.0.0.1:{server['port']}/api"
    with urllib.request.urlopen(f"{server['api_url']}/health", timeout=10) as resp:
        assert json.loads(resp.read()) is True
    with urllib.request.urlopen(f"http://127.0.0.1:{server['port']}/", timeout=10) as resp:
        assert b"<html" in resp.read().lower()


def test_deploy_creates_pools_and_deployments(server) -> None:
    cmd = [sys.executable, "-m", "crawl2score", "deploy", "--set", f"prefect.home={server['home']}"]
    out = subprocess.run(cmd, env=server["env"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "work pool 'gpu' created" in out.stdout
    for name in ("pipeline/pipeline", "data/data", "tokenizer/tokenizer", "tokens/tokens", "train/train", "eval/eval"):
        assert f"deployment {name} " in out.stdout
    with urllib.request.urlopen(
        urllib.request.Request(f"{server['api_url']}/work_pools/gpu", method="GET"), timeout=10
    ) as resp:
        pool = json.loads(resp.read())
    assert pool["type"] == "process" and pool["concurrency_limit"] == 1

    # The zombie-run automation Prefect prescribes for self-hosted servers, with the config's timing.
    req = urllib.request.Request(
        f"{server['api_url']}/automations/filter",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        automations = {a["name"]: a for a in json.loads(resp.read())}
    zombie = automations["crawl2score: crash flow runs whose heartbeats stop"]
    assert zombie["trigger"]["posture"] == "Proactive" and zombie["trigger"]["within"] == 120
    assert zombie["actions"][0]["type"] == "change-flow-run-state" and zombie["actions"][0]["state"] == "CRASHED"
