"""`crawl2score server` serves the API and UI on loopback; `deploy` creates pools and deployments on it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
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


def _record(home: Path, pid: int) -> Path:
    from crawl2score.server import SERVER_FILE

    path = home / SERVER_FILE
    path.write_text(json.dumps({"api_url": "http://127.0.0.1:9/api", "pid": pid}))  # port 9: nothing answers
    return path


def test_stop_never_signals_a_process_that_is_not_the_recorded_server(tmp_path, capsys) -> None:
    """A recorded pid can outlive its server and go to another process: `--stop` leaves that one alone; a
    server run in the foreground is left to its Ctrl-C; a server already gone is just forgotten."""
    from crawl2score.server import stop_server

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    look_alike = [sys.executable, "-c", "import time; time.sleep(60)", "prefect", "server", "start", "--port"]
    foreground = subprocess.Popen([*look_alike, "9"])
    elsewhere = subprocess.Popen([*look_alike, "4200"], start_new_session=True)  # another server's port
    for proc in (foreground, elsewhere):
        while b"prefect" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():  # exec'd (before: pytest)
            time.sleep(0.01)
    try:
        path = _record(tmp_path, other.pid)
        assert stop_server(str(tmp_path), wait_s=1) == 2
        assert "no longer the Prefect server" in capsys.readouterr().err
        assert other.poll() is None and not path.exists()

        path = _record(tmp_path, foreground.pid)
        assert stop_server(str(tmp_path), wait_s=1) == 2
        assert "runs in the foreground: stop it with Ctrl-C" in capsys.readouterr().err
        assert foreground.poll() is None and path.exists()

        path = _record(tmp_path, elsewhere.pid)  # a server command line, but not for the recorded port
        assert stop_server(str(tmp_path), wait_s=1) == 2
        assert "no longer the Prefect server" in capsys.readouterr().err
        assert elsewhere.poll() is None
    finally:
        for proc in (other, foreground, elsewhere):
            proc.kill()
            proc.wait()
    path = _record(tmp_path, foreground.pid)  # gone now, and nothing answers at its URL
    assert stop_server(str(tmp_path), wait_s=1) == 0 and not path.exists()
    assert stop_server(str(tmp_path), wait_s=1) == 2  # nothing recorded any more
    assert "no background server recorded" in capsys.readouterr().err
