"""Helpers every stage task shares: progress and table artifacts, subprocess streaming.

They degrade to no-ops outside a Prefect run context, so a stage function that reports progress can also
be called from a plain test or script.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError

from crawl2score.errors import BadInput, FailedElsewhere
from crawl2score.workdir import flatten_figures, format_value


class _NoTracebackForBadInput(logging.Filter):
    """Prefect logs a failed task or flow run with the exception's traceback, in the terminal and in the UI.
    For :class:`BadInput` the traceback points at our code when the fix is in a file or a setting, and buries
    the one line that says so; the record keeps its message ("Task run failed with exception:
    CorpusError('corpus/a.jsonl.gz: cannot be read (Not a gzipped file)')") and loses the traceback. So
    does :class:`FailedElsewhere`, whose cause is in another run's log. Any other exception, a bug, keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], (BadInput, FailedElsewhere)):
            # A deployment run's flow engine adds "Engine execution exited with unexpected exception" after
            # the run has logged its failure: for an expected one, a line that only asks for a bug report.
            if record.getMessage() == "Engine execution exited with unexpected exception":
                return False
            record.exc_info, record.exc_text = None, None
        return True


def quiet_bad_input_tracebacks() -> None:
    """Install the filter on the loggers Prefect's engines report run failures with (idempotent).

    Called when this module is imported, which every stage flow does: in the CLI's process and in the
    process a worker starts for a deployment run, after Prefect has set up its logging there.
    """
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _NoTracebackForBadInput) for f in log.filters):
            log.addFilter(_NoTracebackForBadInput())


quiet_bad_input_tracebacks()


def retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """A task's `retry_condition_fn`: retry what may pass next time (a dropped connection, a crashed trainer,
    which resumes); a BadInput fails the same way again, so it ends the run at once."""
    try:
        state.result()
    except BadInput:
        return False
    except Exception:
        return True
    return False


def logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("crawl2score")


def _in_run() -> bool:
    from prefect.context import FlowRunContext

    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def _artifact_key(name: str) -> str:
    # Prefect keys: lowercase letters, digits and dashes only.
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


class Progress:
    """A Prefect progress artifact kept current while a stage runs (throttled to one update a second)."""

    def __init__(self, description: str, total: float) -> None:
        self.total = max(float(total), 1.0)
        self.done = 0.0
        self._last = 0.0
        self._id = None
        if _in_run():
            try:
                self._id = create_progress_artifact(progress=0.0, description=description)
            except Exception as exc:  # artifacts are a view; a failing API must not fail the stage
                logger().debug("progress artifact unavailable: %s", exc)

    def advance(self, amount: float = 1.0) -> None:
        self.set(self.done + amount)

    def set(self, done: float, force: bool = False) -> None:
        self.done = done
        now = time.monotonic()
        if self._id is None or (not force and now - self._last < 1.0):
            return
        self._last = now
        try:
            update_progress_artifact(self._id, progress=min(100.0, 100.0 * self.done / self.total))
        except Exception as exc:
            logger().debug("progress update failed: %s", exc)

    def finish(self) -> None:
        self.set(self.total, force=True)


def table_artifact(name: str, rows: list[dict[str, Any]] | dict[str, Any], description: str = "") -> None:
    """A table of a stage's figures in the UI: rows, or a dict shown as figure/value rows."""
    if isinstance(rows, dict):
        rows = [{"figure": k, "value": format_value(v)} for k, v in flatten_figures(rows).items()]
    if not _in_run():
        return
    try:
        create_table_artifact(key=_artifact_key(name), table=rows, description=description or name)
    except Exception as exc:
        logger().debug("table artifact failed: %s", exc)


def markdown_artifact(name: str, markdown: str, description: str = "") -> None:
    if not _in_run():
        return
    try:
        create_markdown_artifact(key=_artifact_key(name), markdown=markdown, description=description or name)
    except Exception as exc:
        logger().debug("markdown artifact failed: %s", exc)


def run_streaming(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    on_line: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
    hang_timeout_s: float | None = None,
    describe: Callable[[str], str | None] | None = None,
) -> int:
    """Run a command in its own process group and send each output line to the run's logs.

    `describe` turns a line into what a person reads in the logs (None: not logged), e.g. the trainer's
    JSON metric records into `step 20/40 · loss 8.17 · …`; `on_line` still sees every raw line.

    The whole group is killed on timeout, on a hang (no output line for `hang_timeout_s`), on
    cancellation or on any exception here, so no orphaned trainer keeps a GPU busy. Returns the exit code;
    raises TimeoutError for a timeout and HangError for a hang.
    """
    log = logger()
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    last_line = [time.monotonic()]
    start = time.monotonic()
    reason: list[str] = []

    def watchdog() -> None:
        while proc.poll() is None:
            now = time.monotonic()
            if timeout_s is not None and now - start > timeout_s:
                reason.append("timeout")
            elif hang_timeout_s is not None and now - last_line[0] > hang_timeout_s:
                reason.append("hang")
            if reason:
                kill_group(proc)
                return
            time.sleep(0.5)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            last_line[0] = time.monotonic()
            line = line.rstrip("\n")
            text = describe(line) if describe is not None else line
            if text:
                log.info(text)
            if on_line is not None:
                on_line(line)
        code = proc.wait()
    except BaseException:
        kill_group(proc)
        raise
    if reason == ["timeout"]:
        raise TimeoutError(f"{cmd[0]}: killed after {timeout_s:.0f} s (task timeout)")
    if reason == ["hang"]:
        raise HangError(f"{cmd[0]}: no output for {hang_timeout_s:.0f} s; killed as hung")
    return code


class HangError(RuntimeError):
    """The subprocess stopped making progress (distinct from slow: it printed nothing for too long)."""


def kill_group(proc: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after a grace period."""
    if proc.poll() is not None:
        return
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
