"""The shared Prefect plumbing: subprocess streaming and killing, stage skipping, artifacts."""

from __future__ import annotations

import logging
import os
import sys
import time

import pytest
from prefect import flow

from crawl2score.config import load_config
from crawl2score.flows._stage import run_stage
from crawl2score.tasks._prefect import HangError, Progress, run_streaming


def test_run_streaming_passes_lines_and_exit_code() -> None:
    lines: list[str] = []
    code = run_streaming([sys.executable, "-c", "print('a'); print('b'); raise SystemExit(3)"], on_line=lines.append)
    assert code == 3
    assert lines == ["a", "b"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it no longer runs.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_hang_kills_the_whole_process_group(tmp_path) -> None:
    child_pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(child_pid_file)!r}, 'w').write(str(c.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n"
    )
    with pytest.raises(HangError, match="hung"):
        run_streaming([sys.executable, "-c", script], hang_timeout_s=2.0)
    child = int(child_pid_file.read_text())
    for _ in range(50):
        if not _pid_alive(child):
            break
        time.sleep(0.1)
    assert not _pid_alive(child), "the trainer's child process outlived the kill"


def test_timeout_raises() -> None:
    with pytest.raises(TimeoutError):
        run_streaming([sys.executable, "-c", "import time; time.sleep(60)"], timeout_s=1.0)


def test_progress_outside_a_run_is_a_noop() -> None:
    p = Progress("x", total=3)
    p.advance()
    p.finish()
    assert p.done == 3


def test_stage_skips_when_key_matches(tmp_path, prefect_harness) -> None:
    cfg = load_config("tiny", workdir=tmp_path)
    calls: list[str] = []

    def body(key: str) -> dict:
        calls.append(key)
        (tmp_path / "data").mkdir(exist_ok=True)
        return {"docs": 1}

    @flow
    def stage_flow(force: bool = False) -> dict:
        return run_stage("data", cfg, [], body, force=force)

    first = stage_flow()
    second = stage_flow()
    forced = stage_flow(force=True)
    assert not first["skipped"] and second["skipped"] and not forced["skipped"]
    assert len(calls) == 2 and first["key"] == second["key"] == forced["key"]
    assert (tmp_path / "report.json").exists()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("bad_input", [True, False], ids=["bad-input", "bug"])
def test_failed_run_logs_bad_input_as_one_line_and_a_bug_with_its_traceback(prefect_harness, bad_input) -> None:
    """What the run's log shows (terminal and UI alike: both are handlers behind these loggers)."""
    from prefect import task

    from crawl2score.errors import BadInput
    from crawl2score.tasks import _prefect  # noqa: F401  (installs the filter, as every stage flow does)

    error = BadInput("corpus/a.jsonl.gz: cannot be read") if bad_input else ValueError("an index out of range")

    @task
    def read() -> None:
        raise error

    @flow
    def stage() -> None:
        read()

    handler = _Records()
    loggers = [logging.getLogger(n) for n in ("prefect.task_runs", "prefect.flow_runs")]
    for log in loggers:
        log.addHandler(handler)
    try:
        with pytest.raises(type(error)):
            stage()
    finally:
        for log in loggers:
            log.removeHandler(handler)
    failures = [r for r in handler.records if r.levelno >= logging.ERROR and str(error) in r.getMessage()]
    assert {r.name for r in failures} == {"prefect.task_runs", "prefect.flow_runs"}
    with_traceback = {r.name for r in failures if r.exc_info}
    assert with_traceback == (set() if bad_input else {"prefect.task_runs", "prefect.flow_runs"})


def test_engine_exit_line_is_dropped_for_expected_failures_only() -> None:
    """A deployment run's flow engine logs "Engine execution exited with unexpected exception" after the run
    logged its failure; for bad input (and a failed run waited on) it only asks for a bug report."""
    from crawl2score.errors import BadInput, FailedElsewhere
    from crawl2score.tasks._prefect import _NoTracebackForBadInput

    def record(exc: BaseException, msg: str) -> logging.LogRecord:
        return logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, msg, None, (type(exc), exc, None))

    engine = "Engine execution exited with unexpected exception"
    keep = _NoTracebackForBadInput()
    assert not keep.filter(record(BadInput("x: bad"), engine))
    assert not keep.filter(record(FailedElsewhere("run r failed"), engine))
    bug = record(IndexError("index out of range"), engine)
    assert keep.filter(bug) and bug.exc_info is not None
    other = record(BadInput("x: bad"), "Encountered exception during execution: BadInput('x: bad')")
    assert keep.filter(other) and other.exc_info is None
