"""`crawl2score server`: a local Prefect server and UI on loopback, SQLite, telemetry off."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from crawl2score.runtime import QUIET_ENV

SERVER_FILE = "server.json"
AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"  # `user:password`; clients send it as PREFECT_API_AUTH_STRING
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def exposure_error(host: str, env: dict[str, str] | os._Environ = os.environ) -> str | None:
    """Why serving on `host` is refused, or None. A Prefect API runs code on workers: reachable from
    other machines it must demand credentials, so a non-loopback host needs PREFECT_SERVER_API_AUTH_STRING."""
    if host in LOOPBACK or host.startswith("127.") or env.get(AUTH_ENV):
        return None
    return (
        f"prefect.server_host {host} exposes the Prefect API beyond this machine without authentication; "
        f"set {AUTH_ENV}=user:password (clients: PREFECT_API_AUTH_STRING) or keep 127.0.0.1"
    )


def server_env(home: str | os.PathLike[str], host: str, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(QUIET_ENV)
    env.update(
        {
            "PREFECT_HOME": str(Path(home).resolve()),
            "PREFECT_SERVER_API_HOST": host,
            # The UI reads its API address from this port; `--port` alone leaves it calling 4200.
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_UI_API_URL": f"http://{host}:{port}/api",
            "PREFECT_API_URL": f"http://{host}:{port}/api",
        }
    )
    return env


def healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout_s) as resp:
            return resp.status == 200
    except OSError:
        return False


def running_server_url(home: str | os.PathLike[str]) -> str | None:
    """The API URL of a server started by `crawl2score server` with this home, if it answers."""
    try:
        info = json.loads((Path(home) / SERVER_FILE).read_text())
    except (OSError, ValueError):
        return None
    url = info.get("api_url")
    return url if url and healthy(url, timeout_s=1.0) else None


def _runs_prefect_server(pid: int, api_url: str) -> bool | None:
    """Whether `pid` runs the `prefect server start ... --port PORT` that `start_server` starts for `api_url`
    (Linux /proc); None where that cannot be told. A recorded pid can outlive its server and be given to
    another process: that one must not be signalled."""
    try:
        cmdline = b"\0" + Path(f"/proc/{pid}/cmdline").read_bytes()  # arguments, each ending in NUL
    except FileNotFoundError:
        return False if Path("/proc/self").exists() else None
    except OSError:
        return None
    port = str(urlsplit(api_url).port or "").encode()
    return b"\0prefect\0server\0start\0" in cmdline and b"\0--port\0" + port + b"\0" in cmdline


def start_server(home: str, host: str, port: int, wait_s: float = 120.0, foreground: bool = True) -> int:
    """Start `prefect server start`, wait for /api/health, record the URL for later clients."""
    refused = exposure_error(host)
    if refused:
        print(f"crawl2score: error: {refused}", file=sys.stderr)
        return 2
    Path(home).mkdir(parents=True, exist_ok=True)
    env = server_env(home, host, port)
    api_url = env["PREFECT_API_URL"]
    if healthy(api_url):
        print(f"a Prefect server already answers at {api_url}")
        return 0
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    # In the background the server must not hold our stdout open: it logs to PREFECT_HOME/server.log.
    log = None if foreground else open(Path(home) / "server.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, start_new_session=not foreground, stdout=log, stderr=log)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"crawl2score: error: prefect server exited with code {proc.returncode}", file=sys.stderr)
            return proc.returncode or 1
        if healthy(api_url):
            break
        time.sleep(1.0)
    else:
        proc.terminate()
        print(f"crawl2score: error: server did not answer {api_url}/health within {wait_s:.0f} s", file=sys.stderr)
        return 1
    (Path(home) / SERVER_FILE).write_text(json.dumps({"api_url": api_url, "pid": proc.pid}))
    print(f"Prefect UI: http://{host}:{port}  (API {api_url}); PREFECT_HOME={Path(home).resolve()}", flush=True)
    if not foreground:
        return 0
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()
    finally:
        (Path(home) / SERVER_FILE).unlink(missing_ok=True)


def stop_server(home: str, wait_s: float = 30.0) -> int:
    """Stop the server `start_server(..., foreground=False)` recorded in `home`: its whole session (the
    server's own workers too), then forget it. A server run in the foreground stops with Ctrl-C."""
    path = Path(home) / SERVER_FILE
    try:
        info = json.loads(path.read_text())
        pid, api_url = int(info["pid"]), str(info["api_url"])
    except (OSError, ValueError, KeyError, TypeError):
        print(f"crawl2score: error: no background server recorded in {path}", file=sys.stderr)
        return 2

    def fail(message: str, forget: bool = True) -> int:
        if forget:
            path.unlink(missing_ok=True)
        print(f"crawl2score: error: {message}", file=sys.stderr)
        return 2

    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    except PermissionError:
        alive = True  # another user's process: killpg below says so
    if alive:
        if _runs_prefect_server(pid, api_url) is False:
            return fail(f"pid {pid} in {path} is no longer the Prefect server (another process has it); record removed")
        try:
            # started with start_new_session: a background server leads its own session
            if os.getsid(pid) != pid:
                return fail(f"the server at {api_url} (pid {pid}) runs in the foreground: stop it with Ctrl-C", False)
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:  # it ended meanwhile
            alive = False
        except PermissionError:
            return fail(f"not allowed to stop pid {pid} (the server at {api_url}): started by another user?", False)
    deadline = time.monotonic() + wait_s
    while alive and time.monotonic() < deadline and healthy(api_url, timeout_s=1.0):
        time.sleep(0.5)
    if healthy(api_url, timeout_s=1.0):
        if not alive:
            return fail(f"the recorded server (pid {pid}) is gone, but another server answers at {api_url}")
        return fail(f"the server at {api_url} (pid {pid}) still answers after {wait_s:.0f} s", False)
    path.unlink(missing_ok=True)
    print(f"stopped the Prefect server at {api_url}")
    return 0
