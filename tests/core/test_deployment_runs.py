"""Deployment runs the way a user starts them: a real Prefect server on loopback, `crawl2score deploy`, one
process worker per pool (`cpu`, `gpu`), runs created through the API (what the UI's Run button does), and
the outcome read back through the API: states, subflow runs, the pool each ran on, artifacts.

One server and one pair of workers for the module; the `tiny` preset cut to a few steps keeps each run to
a minute or two on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from crawl2score.workdir import STAGES as WORKDIR_STAGES
from tests.fast_run import FAST_RUN

REPO = Path(__file__).resolve().parents[2]
STAGES = list(WORKDIR_STAGES)
TINY = [*FAST_RUN, "prefect.train_deployment=train/train"]  # the pipeline hands training to the gpu pool
RUN_TIMEOUT_S = 900


def api(server: dict[str, Any], method: str, path: str, body: Any = None) -> Any:
    """One REST call; a busy server's 503/429 is retried as Prefect's own client does."""
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(6):
        req = urllib.request.Request(
            f"{server['api_url']}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
            return json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 503) or attempt == 5:
                raise
            time.sleep(2**attempt)


@pytest.fixture(scope="module")
def deployed(server, tmp_path_factory):
    """`crawl2score deploy` with the tiny settings, then a worker on each pool for the whole module."""
    work = tmp_path_factory.mktemp("deployed") / "work"
    env = dict(server["env"], PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="5")
    common = ["--set", f"prefect.home={server['home']}"]
    overrides = [arg for item in TINY for arg in ("--set", item)]
    out = subprocess.run(
        [sys.executable, "-m", "crawl2score", "deploy", "--workdir", str(work), *common, *overrides],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    logs = tmp_path_factory.mktemp("worker-logs")
    workers: dict[str, subprocess.Popen] = {}

    def start(pool: str) -> None:
        with open(logs / f"{pool}.log", "ab") as log:
            workers[pool] = subprocess.Popen(
                [sys.executable, "-m", "crawl2score", "worker", "--pool", pool, *common],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    for pool in ("cpu", "gpu"):
        start(pool)
    yield {"work": work, "logs": logs, "workers": workers, "restart": start}
    for proc in workers.values():
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def deployment(server, name: str) -> dict[str, Any]:
    flow, dep = name.split("/")
    return api(server, "GET", f"/deployments/name/{flow}/{dep}")


def run_deployment(server, name: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create a flow run of a deployment (as the UI's Run button does) and wait for a final state."""
    dep = deployment(server, name)
    body = {"parameters": parameters} if parameters is not None else {}
    run = api(server, "POST", f"/deployments/{dep['id']}/create_flow_run", body)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        run = api(server, "GET", f"/flow_runs/{run['id']}")
        if run["state"] and run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(2)
    raise AssertionError(f"{name}: flow run {run['id']} still {run['state']['type']} after {RUN_TIMEOUT_S} s")


def all_flow_runs(server) -> list[dict[str, Any]]:
    runs = api(server, "POST", "/flow_runs/filter", {"limit": 200})
    flows = {f["id"]: f["name"] for f in api(server, "POST", "/flows/filter", {"limit": 200})}
    for r in runs:
        r["flow_name"] = flows.get(r["flow_id"])
    return runs


def latest_artifact(server, key: str) -> Any:
    art = api(server, "GET", f"/artifacts/{key}/latest")
    data = art["data"]
    return json.loads(data) if isinstance(data, str) and data[:1] in "[{" else data


def test_pipeline_deployment_runs_every_stage_through_the_workers(server, deployed) -> None:
    run = run_deployment(server, "pipeline/pipeline")
    assert run["state"]["type"] == "COMPLETED", (run["state"], (deployed["logs"] / "cpu.log").read_text()[-4000:])
    assert run["work_pool_name"] == "cpu"

    runs = all_flow_runs(server)
    by_flow = {r["flow_name"]: r for r in runs}
    for stage in STAGES:
        assert by_flow[stage]["state"]["type"] == "COMPLETED", stage
    # training was handed to the gpu pool: its flow run belongs to the train deployment, run by that worker
    train_runs = [r for r in runs if r["flow_name"] == "train"]
    assert any(r["work_pool_name"] == "gpu" and r["deployment_id"] for r in train_runs)
    assert (deployed["work"] / "checkpoints" / "latest").read_text().strip() == "step-4"

    for key in ("data-figures", "tokenizer-figures", "tokens-figures", "train-figures", "eval-figures"):
        assert latest_artifact(server, key), key
    stages = latest_artifact(server, "pipeline-stages")
    assert [row["stage"] for row in stages] == STAGES and not any(row["skipped"] for row in stages)

    # The same deployment again, same parameters: every stage is current.
    again = run_deployment(server, "pipeline/pipeline")
    assert again["state"]["type"] == "COMPLETED"
    assert all(row["skipped"] for row in latest_artifact(server, "pipeline-stages"))


def test_each_stage_deployment_in_order_on_a_shared_work_directory(server, deployed, tmp_path) -> None:
    params = deployment(server, "data/data")["parameters"]
    config = dict(params["config"], workdir=str(tmp_path / "work"))
    for stage in STAGES:
        run = run_deployment(server, f"{stage}/{stage}", {"config": config})
        pool = "gpu" if stage == "train" else "cpu"
        assert run["state"]["type"] == "COMPLETED", (stage, run["state"])
        assert run["work_pool_name"] == pool, stage
        assert (tmp_path / "work" / {"train": "checkpoints"}.get(stage, stage) / ".stage.json").is_file(), stage


def run_logs(server, run_id: str, until: str, timeout_s: float = 60) -> list[str]:
    """The run's log lines as the UI lists them, once one containing `until` has arrived (the flow-run
    process sends its last lines as it exits, after the run's final state)."""
    deadline = time.monotonic() + timeout_s
    while True:
        logs = api(server, "POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
        messages = [entry["message"] for entry in logs]
        if any(until in m for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(1)


def test_bad_input_fails_the_run_with_one_line_naming_the_file_and_no_traceback(server, deployed, tmp_path) -> None:
    """A user's corpus with a broken file, started from the UI: the run fails, its state and its log say which
    file and what is wrong in one line each, with no traceback through our code, and nothing is written."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "00000.jsonl").write_text('{"text": "a good document", "metadata": {"language": "en"}}\n')
    broken = corpus / "00001.jsonl.gz"
    broken.write_bytes(b"<html>an error page saved as .gz</html>")
    config = dict(deployment(server, "tokenizer/tokenizer")["parameters"]["config"], workdir=str(tmp_path / "work"))
    config["tokenizer"] = dict(config["tokenizer"], input=str(corpus))

    run = run_deployment(server, "tokenizer/tokenizer", {"config": config})
    assert run["state"]["type"] == "FAILED"
    line = f"{broken}: cannot be read (Not a gzipped file"
    assert line in run["state"]["message"]
    messages = run_logs(server, run["id"], until="Encountered exception")
    assert any(line in m and m.startswith("Task run failed") for m in messages), messages
    assert any(line in m and m.startswith("Encountered exception") for m in messages), messages
    assert not [m for m in messages if "Traceback" in m], messages
    assert not (tmp_path / "work" / "tokenizer").exists()


def test_a_run_on_stale_output_or_a_failed_train_run_ends_in_one_line(server, deployed, tmp_path) -> None:
    """From the UI, on the pipeline test's completed stages (copied): a pipeline run of `train` alone after a
    tokenizer setting changed fails up front, saying which stages to redo; a run whose train deployment run
    fails on its config fails with one line naming that run and carrying its line (was: `RuntimeError: train
    deployment 'train/train' ended in state Failed` and two tracebacks). Neither log has a traceback or
    Prefect's "Engine execution exited with unexpected exception"."""
    import shutil

    own = tmp_path / "work"
    for stage in ("data", "tokenizer", "tokens"):
        shutil.copytree(deployed["work"] / stage, own / stage)
    vocab = deployment(server, "pipeline/pipeline")["parameters"]["config"]["tokenizer"]["vocab_size"]
    cases = {
        f"tokenizer.vocab_size={vocab + 512}": [
            f"the tokenizer stage's output was made with other settings (tokenizer.vocab_size {vocab} -> {vocab + 512})",
            'a pipeline run with stages ["tokenizer", "tokens", "train"] and the same overrides',
        ],
        "train.seq_len=100000": [
            "FailedElsewhere: train deployment 'train/train': flow run '",
            "TrainerError: train.seq_len 100000 exceeds model.max_seq_len",
        ],
    }
    for override, lines in cases.items():
        run = run_deployment(
            server, "pipeline/pipeline", {"stages": ["train"], "overrides": [f"workdir={own}", override]}
        )
        assert run["state"]["type"] == "FAILED", run["state"]
        assert all(line in run["state"]["message"] for line in lines), run["state"]["message"]
        messages = run_logs(server, run["id"], until="Encountered exception")
        assert any(lines[1] in m and m.startswith("Encountered exception") for m in messages), "\n".join(messages)
        assert not [m for m in messages if "Traceback" in m or "Engine execution exited" in m], messages
    assert not (own / "checkpoints" / "latest").exists()


def trainer_pids(workdir: Path) -> list[int]:
    """Live trainer processes of this work directory (their command line names its run config)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().split()[2]
        except OSError:
            continue
        if "crawl2score.model.train" in cmdline and str(workdir) in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.5)


def long_training(server, deployed) -> tuple[dict[str, Any], Path, dict[str, Any]]:
    """A train deployment run long enough to interrupt, on the pipeline test's tokens; returns once it has
    written a checkpoint of its own."""
    config = deployment(server, "train/train")["parameters"]["config"]
    config = dict(config, train=dict(config["train"], steps=10_000, checkpoint_every=2))
    dep = deployment(server, "train/train")
    run = api(server, "POST", f"/deployments/{dep['id']}/create_flow_run", {"parameters": {"config": config}})
    work = Path(config["workdir"])
    latest = work / "checkpoints" / "latest"
    wait_for(
        lambda: trainer_pids(work) and latest.is_file() and latest.read_text().strip() not in ("", "step-4"),
        600,
        "a checkpoint of the long run",
    )
    return run, work, config


def test_cancel_from_the_api_stops_the_trainer_and_keeps_the_last_checkpoint(server, deployed) -> None:
    """What the UI's Cancel button does: the run goes Cancelling; the worker ends the flow-run process and
    the trainer's whole process group, the run ends Cancelled, and the newest checkpoint loads."""
    from safetensors.torch import load_file

    run, work, _ = long_training(server, deployed)
    assert trainer_pids(work)
    api(server, "POST", f"/flow_runs/{run['id']}/set_state", {"state": {"type": "CANCELLING"}, "force": True})
    wait_for(lambda: not trainer_pids(work), 30, "trainer processes gone after cancel")
    wait_for(lambda: api(server, "GET", f"/flow_runs/{run['id']}")["state"]["type"] == "CANCELLED", 60, "run Cancelled")
    newest = work / "checkpoints" / (work / "checkpoints" / "latest").read_text().strip()
    assert load_file(str(newest / "model.safetensors"))


@pytest.mark.slow
def test_killed_worker_is_marked_crashed_and_a_new_run_resumes(server, deployed) -> None:
    """A machine loss: the gpu worker and everything under it get SIGKILL mid-training. Heartbeats stop,
    the zombie automation marks the run Crashed, and a new run of the deployment resumes the checkpoints."""
    run, work, config = long_training(server, deployed)
    os.killpg(deployed["workers"]["gpu"].pid, signal.SIGKILL)
    for pid in trainer_pids(work):  # the trainer runs in its own session: part of the same lost machine
        os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: api(server, "GET", f"/flow_runs/{run['id']}")["state"]["type"] == "CRASHED",
        600,
        "run marked Crashed by the zombie automation",
    )
    resumed_from = work / "checkpoints" / (work / "checkpoints" / "latest").read_text().strip()
    deployed["restart"]("gpu")
    dep = deployment(server, "train/train")
    again = api(server, "POST", f"/deployments/{dep['id']}/create_flow_run", {"parameters": {"config": config}})
    metrics = work / "checkpoints" / "metrics.jsonl"
    wait_for(lambda: f'"resumed_from": "{resumed_from}"' in metrics.read_text(), 600, "the new run resumed")
    api(server, "POST", f"/flow_runs/{again['id']}/set_state", {"state": {"type": "CANCELLING"}, "force": True})
    wait_for(lambda: not trainer_pids(work), 60, "trainer stopped")
