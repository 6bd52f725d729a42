"""The Prefect train stage: the flow end to end on the tiny model, skipping when current, and a hung
trainer killed and reported as such (not as slow)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from crawl2score.config import Config
from crawl2score.tasks._prefect import HangError
from crawl2score.workdir import write_marker
from tests.train.conftest import tiny_config


def _config(tmp_path, tokens_dir, **train) -> Config:
    workdir = tmp_path / "work"
    shutil.copytree(tokens_dir, workdir / "tokens")
    write_marker(workdir, "tokens", "tok-key-1", {})
    raw = tiny_config(tokens_dir, **train)
    raw["train"].pop("tokens_dir")
    return Config.model_validate({"workdir": str(workdir), **raw})


def test_train_flow_runs_reports_and_skips(prefect_harness, tmp_path, tokens_dir):
    from crawl2score.flows.train import train_flow

    cfg = _config(tmp_path, tokens_dir, steps=4, checkpoint_every=2)
    result = train_flow(config=cfg, nproc=1)
    assert not result["skipped"]
    figures = result["figures"]
    assert figures["steps"] == 4 and figures["ce_loss"] > 0 and figures["tokens_per_s"] > 0
    ckpt = tmp_path / "work/checkpoints"
    assert (ckpt / "latest").read_text().strip() == "step-4"
    assert (ckpt / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert train_flow(config=cfg, nproc=1)["skipped"]

    # What the run's logs show of the trainer's JSON records: lines a person reads.
    import re

    from crawl2score.tasks.train import describe_line

    records = (ckpt / "metrics.jsonl").read_text().splitlines()
    shown = [describe_line(r) for r in records]
    steps = [s for s in shown if s and s.startswith("step ")]
    assert len(steps) == 4
    pattern = r"step \d+/4 · loss [\d.]+ · [\d.]+[kMG]? tok/s · lr [\d.e+-]+ · MaxVio [\d.]+"
    assert all(re.fullmatch(pattern, s) for s in steps), steps
    assert not any(s and s.startswith("{") for s in shown)


@pytest.mark.parametrize("nproc", [1, 2])
def test_trainer_config_error_fails_the_stage_with_its_one_line_and_no_retry(
    prefect_harness, tmp_path, tokens_dir, nproc
):
    """The trainer's own check (exit 2): the stage fails with that line as a BadInput, which the CLI prints
    as one line with exit 2 and Prefect logs without a traceback; a retry would repeat it, so none is made."""
    from crawl2score.errors import BadInput
    from crawl2score.flows.train import train_flow

    cfg = _config(tmp_path, tokens_dir, steps=2)
    cfg = cfg.model_copy(update={"model": dataclasses.replace(cfg.model, vocab_size=200)})
    with pytest.raises(BadInput, match=r"tokens use \d+ ids; model.vocab_size is 200") as caught:
        train_flow(config=cfg, nproc=nproc)  # 2: torchrun, which exits 1 whatever its ranks did
    assert type(caught.value).__name__ == "TrainerError"
    assert str(caught.value) == "tokens use 256 ids; model.vocab_size is 200"  # one rank's line, whole
    assert not (tmp_path / "work/checkpoints/latest").exists()


def test_sequence_longer_than_the_model_is_a_one_line_config_error(tmp_path, tokens_dir) -> None:
    from crawl2score.errors import BadInput
    from crawl2score.model.train import Trainer

    raw = tiny_config(tokens_dir)
    raw["train"]["seq_len"] = raw["model"]["max_seq_len"] * 2
    with pytest.raises(BadInput, match=r"train.seq_len 128 exceeds model.max_seq_len 64"):
        Trainer(raw, tmp_path)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_device_without_cuda_is_a_one_line_config_error() -> None:
    from crawl2score.errors import BadInput
    from crawl2score.model.train import setup_distributed
    from crawl2score.model.train_config import TrainArgs

    with pytest.raises(BadInput, match="train.device cuda: this machine has no CUDA device"):
        setup_distributed(TrainArgs(device="cuda"))


def _stop_trainer_child(found: list[int], timeout_s: float = 60.0) -> None:
    """SIGSTOP the trainer subprocess of this process once it appears: a real hang (no output, no
    heartbeat, the process alive), as a stuck collective would be."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not found:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd = (proc / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            if ppid == os.getpid() and b"crawl2score.model.train" in cmd:
                time.sleep(3.0)  # let it start and make a few steps first
                os.kill(int(proc.name), signal.SIGSTOP)
                found.append(int(proc.name))
                return
        time.sleep(0.1)


def test_hung_trainer_is_killed_and_reported(tmp_path, tokens_dir):
    from crawl2score.tasks.train import train_task

    cfg = _config(tmp_path, tokens_dir, steps=100000, hang_timeout_s=20.0)
    stopped: list[int] = []
    watcher = threading.Thread(target=_stop_trainer_child, args=(stopped,), daemon=True)
    watcher.start()
    t0 = time.monotonic()
    with pytest.raises(HangError, match="hung"):
        train_task.fn(cfg.model, cfg.train, cfg.workdir, "k", nproc=1)
    assert time.monotonic() - t0 < 120
    watcher.join()
    assert stopped, "the trainer subprocess was never seen"
    with pytest.raises(ProcessLookupError):  # killed by the task, stopped as it was
        os.kill(stopped[0], 0)


def test_checkpoints_of_another_key_are_moved_aside_not_resumed(tmp_path):
    """A stale train stage (new tokens, config or code) starts over; the other run's checkpoints are kept."""
    import json

    from crawl2score.tasks.train import RUN_CONFIG, prepare_checkpoints

    ckpt = tmp_path / "checkpoints"
    (ckpt / "step-2").mkdir(parents=True)
    (ckpt / "step-2" / "model.safetensors").write_bytes(b"w")
    (ckpt / "latest").write_text("step-2\n")
    (ckpt / RUN_CONFIG).write_text(json.dumps({"stage_key": "old"}))

    assert prepare_checkpoints(str(tmp_path), "old", fresh=False) is None  # same run: resume
    assert (ckpt / "latest").exists()
    aside = prepare_checkpoints(str(tmp_path), "new", fresh=False)
    assert aside == ckpt / "superseded-old"
    assert (aside / "step-2" / "model.safetensors").read_bytes() == b"w"
    assert sorted(p.name for p in ckpt.iterdir()) == ["superseded-old"]

    (ckpt / "step-4").mkdir()
    (ckpt / RUN_CONFIG).write_text(json.dumps({"stage_key": "new"}))
    # back to the old config: the new run is set aside and the old one comes back, to be resumed
    assert prepare_checkpoints(str(tmp_path), "old", fresh=False) == ckpt / "superseded-new"
    assert sorted(p.name for p in ckpt.iterdir()) == sorted([RUN_CONFIG, "latest", "step-2", "superseded-new"])
    assert json.loads((ckpt / RUN_CONFIG).read_text())["stage_key"] == "old"
    assert prepare_checkpoints(str(tmp_path), "new", fresh=False) == ckpt / "superseded-old"
    assert sorted(p.name for p in ckpt.iterdir()) == sorted([RUN_CONFIG, "step-4", "superseded-old"])

    prepare_checkpoints(str(tmp_path), "new", fresh=True)
    assert sorted(p.name for p in ckpt.iterdir()) == ["superseded-old"]
    # A run of a key whose older copy is still set aside (its run config was lost meanwhile, so it was
    # not moved back): setting this one aside keeps both whole, under two names.
    (ckpt / "step-2").mkdir()
    (ckpt / RUN_CONFIG).write_text(json.dumps({"stage_key": "old"}))
    assert prepare_checkpoints(str(tmp_path), "new", fresh=False) == ckpt / "superseded-old-2"
    assert sorted(p.name for p in (ckpt / "superseded-old-2").iterdir()) == sorted([RUN_CONFIG, "step-2"])
    assert (ckpt / "superseded-old" / "step-2" / "model.safetensors").read_bytes() == b"w"
    # Back to that key: the copy set aside last (it went furthest) is resumed; --force removes both.
    (ckpt / "superseded-old-2" / "step-9").mkdir()
    assert prepare_checkpoints(str(tmp_path), "old", fresh=False) is None
    assert (ckpt / "step-9").is_dir() and not (ckpt / "superseded-old-2").exists()
    prepare_checkpoints(str(tmp_path), "old", fresh=True)
    assert sorted(p.name for p in ckpt.iterdir()) == []
    (ckpt / "superseded-old" / "step-2").mkdir(parents=True)
    (ckpt / "superseded-old" / "step-2" / "model.safetensors").write_bytes(b"w")
    (ckpt / "superseded-new").mkdir()  # a copy of this key set aside earlier goes too with --force
    prepare_checkpoints(str(tmp_path), "new", fresh=True)
    assert sorted(p.name for p in ckpt.iterdir()) == ["superseded-old"]
    # --force of a run under a new key (another config) with another run's checkpoints in place: they are
    # set aside, not deleted (once, `train --force --set model.vocab_size=512` deleted a finished run and
    # then failed on its config)
    (ckpt / "step-4").mkdir()
    (ckpt / RUN_CONFIG).write_text(json.dumps({"stage_key": "other"}))
    assert prepare_checkpoints(str(tmp_path), "new", fresh=True) == ckpt / "superseded-other"
    assert sorted(p.name for p in (ckpt / "superseded-other").iterdir()) == sorted([RUN_CONFIG, "step-4"])
    assert sorted(p.name for p in ckpt.iterdir()) == ["superseded-old", "superseded-other"]


def test_train_tables_follow_tenths_of_the_run_not_every_log_line(monkeypatch):
    """Each table post is a new artifact version: a 250-step run logging every step posts ~10 of each table
    (was one per 10 s: 12+ for a 5-minute run, 17k a day on a long one), and the final step once."""
    import json

    from crawl2score.tasks import train as train_task

    posted: list[str] = []
    monkeypatch.setattr(train_task, "table_artifact", lambda key, rows, description="": posted.append(key))
    view = train_task._View(250)
    for step in range(1, 251):
        ev = {"event": "step", "step": step, "steps": 250, "loss": 4.0, "ce_loss": 4.0, "tokens_per_s": 1.0, "lr": 1e-3}
        view(json.dumps(ev))
    view.tables(view.last)  # what the task does at the end: not a second post of step 250
    assert posted.count("train-progress") == posted.count("train-moe-health") == 10
    assert view.posted_step == 250
