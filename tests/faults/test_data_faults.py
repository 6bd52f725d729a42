"""kill -9 of the data stage mid-run, then a rerun: the output holds every document of an uninterrupted
run exactly once (datatrove's completion markers and the keyed work dir make the rerun resume)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = 400
# 2 tasks in 2 worker processes: a kill also lands between ranks, with some completion markers written.
# extract_timeout_s 60: Trafilatura's per-page budget (1 s by default) drops pages when the machine is
# loaded, which would make two uninterrupted runs differ; here only the kill may change the output.
SCRIPT = f"""
import sys
from crawl2score.config.data import DataConfig
from crawl2score.data.pipeline import run_data_stage
cfg = DataConfig.model_validate(
    {{"sample_pages": {PAGES}, "extract_timeout_s": 60, "executor": {{"tasks": 2, "workers": 2}}}}
)
run_data_stage(cfg, sys.argv[1])
"""


def _stage(workdir: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(workdir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # the kill reaches datatrove's worker processes too
    )


def _documents(workdir: Path) -> Counter:
    ids: Counter = Counter()
    for f in sorted((workdir / "data" / "output").glob("*.jsonl.gz")):
        with gzip.open(f, "rt") as fh:
            for line in fh:
                d = json.loads(line)
                ids[(d["id"], d["metadata"]["url"])] += 1
    return ids


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Counter, float]:
    work = tmp_path_factory.mktemp("data-straight")
    t0 = time.monotonic()
    proc = _stage(work)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-2000:]
    return _documents(work), time.monotonic() - t0


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.85])
def test_kill9_mid_run_then_rerun_loses_and_duplicates_nothing(tmp_path, uninterrupted, fraction):
    expected, seconds = uninterrupted
    assert expected and max(expected.values()) == 1
    proc = _stage(tmp_path)
    time.sleep(fraction * seconds)  # a point in the run, not an assertion on time
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "data" / "stats.json").exists(), "killed too late: the run had finished"
    rerun = _stage(tmp_path)
    _, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, err[-2000:]
    got = _documents(tmp_path)
    assert got == expected  # same documents, each once
    assert not list((tmp_path / "data").glob(".work-*"))
