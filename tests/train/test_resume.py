"""N steps straight against N/2 steps + kill -9 + resume: the final weights must be bit-identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import torch
from safetensors.torch import load_file

from tests.train.conftest import REPO, events, run_trainer, tiny_config, write_config

# A run killed with SIGKILL right after its 5th step (checkpoint at 4, one step of work past it): the
# real Trainer, stepped through its public methods, then kill -9 on itself.
KILLED_AFTER_5 = """
import os, signal, sys
from pathlib import Path
from crawl2score.model.train import Trainer, read_config
trainer = Trainer(read_config(sys.argv[1]), Path(sys.argv[2]))
trainer.emit_start()
for _ in range(5):
    trainer.record(trainer.train_step())
os.kill(os.getpid(), signal.SIGKILL)
"""


def _tensors(step_dir):
    return {
        **load_file(str(step_dir / "model.safetensors")),
        **{f"opt.{k}": v for k, v in load_file(str(step_dir / "optimizer.safetensors")).items()},
    }


def test_kill9_and_resume_is_bit_identical(tmp_path, tokens_dir):
    cfg = write_config(tmp_path / "cfg.json", tiny_config(tokens_dir, mask_document_boundaries=True))
    straight = run_trainer(cfg, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]

    work = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_5, str(cfg), str(work)], env=env, cwd=REPO, capture_output=True, timeout=180
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpts = work / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step-4"
    assert not (ckpts / "step-8").exists()

    resumed = run_trainer(cfg, work)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    start = events(resumed.stdout, "start")[0]
    assert start["step"] == 4 and start["resumed_from"].endswith("step-4")

    a, b = _tensors(tmp_path / "straight/checkpoints/step-8"), _tensors(ckpts / "step-8")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # metrics.jsonl holds each step once: the killed run's step 5 was dropped on resume.
    steps = [e["step"] for e in events((ckpts / "metrics.jsonl").read_text(), "step")]
    assert steps == list(range(1, 9))
    # keep_last=3 default and 2 checkpoints: both kept; `latest` names the final one.
    assert (ckpts / "latest").read_text().strip() == "step-8"


def test_refuses_checkpoint_of_another_config(tmp_path, tokens_dir):
    cfg = write_config(tmp_path / "cfg.json", tiny_config(tokens_dir, steps=4, checkpoint_every=2))
    assert run_trainer(cfg, tmp_path / "w").returncode == 0
    other = write_config(tmp_path / "other.json", tiny_config(tokens_dir, steps=4, checkpoint_every=2, lr=1e-3))
    res = run_trainer(other, tmp_path / "w")
    assert res.returncode == 2
    assert "different model/train config" in res.stderr


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(tmp_path, tokens_dir):
    # A huge LR with no warm-up blows the weights up within a few steps.
    cfg = write_config(
        tmp_path / "cfg.json",
        tiny_config(tokens_dir, lr=1e30, warmup_steps=0, grad_clip=0.0, checkpoint_every=1, steps=20),
    )
    res = run_trainer(cfg, tmp_path / "w")
    assert res.returncode == 3, res.stderr[-2000:]
    err = events(res.stdout, "error")[0]
    assert "loss is" in err["message"] and "stopped without saving" in err["message"]
    latest = (tmp_path / "w/checkpoints/latest").read_text().strip()
    assert latest == f"step-{err['step'] - 1}"
    from crawl2score.model import load_checkpoint

    load_checkpoint(tmp_path / "w/checkpoints")  # the last checkpoint is complete and loads


def test_resumes_with_a_smaller_micro_batch(tmp_path, tokens_dir):
    """After running out of memory a user halves the micro-batch: the same run resumes (the same global
    batch and update up to rounding), instead of being refused as another config."""
    import shutil

    cfg = write_config(tmp_path / "cfg.json", tiny_config(tokens_dir, steps=4, checkpoint_every=2))
    assert run_trainer(cfg, tmp_path / "w").returncode == 0
    shutil.rmtree(tmp_path / "w" / "checkpoints" / "step-4")
    smaller = tiny_config(tokens_dir, steps=4, checkpoint_every=2, micro_batch_size=1, loss_chunk=64)
    res = run_trainer(write_config(tmp_path / "smaller.json", smaller), tmp_path / "w")
    assert res.returncode == 0, res.stderr[-2000:]
    assert events(res.stdout, "start")[0]["step"] == 2
    assert (tmp_path / "w" / "checkpoints" / "latest").read_text().strip() == "step-4"
