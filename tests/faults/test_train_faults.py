"""kill -9 of the trainer anywhere, including between the files of a checkpoint write, and a full disk
while writing one: every resume succeeds and ends bit for bit where an uninterrupted run ends — weights,
AdamW state, train state and every RNG stream.

Kills inside a save are injected by the checkpoint writer's `CRAWL2SCORE_CKPT_FAULT` hook (the trainer
runs unmodified, as a subprocess); kills at arbitrary moments come from outside with SIGKILL.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from crawl2score.model.train_checkpoint import FAULT_ENV, FAULT_POINTS
from tests.train.conftest import REPO, events, run_trainer, tiny_config, trainer_cmd, write_config

STEPS, EVERY = 8, 4


def _files(step_dir: Path) -> dict[str, tuple[dict, dict]]:
    """Every safetensors file of a step dir as (tensors, header metadata)."""
    out = {}
    for f in sorted(step_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            out[f.name] = ({k: h.get_tensor(k) for k in h.keys()}, h.metadata() or {})
    return out


def assert_same_final_state(ref_dir: Path, got_dir: Path) -> None:
    a, b = _files(ref_dir), _files(got_dir)
    assert set(a) == set(b) and {"model.safetensors", "optimizer.safetensors", "rng-rank0.safetensors"} <= set(a)
    for name in a:
        (ta, ma), (tb, mb) = a[name], b[name]
        assert ta.keys() == tb.keys(), name
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{name}:{k}"
        assert ma == mb, name  # numpy/python RNG scalars live in the header
    sa, sb = (json.loads((d / "train_state.json").read_text()) for d in (ref_dir, got_dir))
    assert sa == sb


@pytest.fixture(scope="module")
def cfg(tmp_path_factory, tokens_dir) -> Path:
    tmp = tmp_path_factory.mktemp("faults-train")
    return write_config(tmp / "cfg.json", tiny_config(tokens_dir, steps=STEPS, checkpoint_every=EVERY))


@pytest.fixture(scope="module")
def straight(tmp_path_factory, cfg) -> Path:
    work = tmp_path_factory.mktemp("straight")
    res = run_trainer(cfg, work)
    assert res.returncode == 0, res.stderr[-2000:]
    return work / "checkpoints"


def _kill_inside_save_then_resume(cfg: Path, work: Path, step: int, point: str) -> subprocess.CompletedProcess:
    killed = run_trainer(cfg, work, env={FAULT_ENV: f"kill@{step}:{point}"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = run_trainer(cfg, work)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return resumed


def _check_resumed(straight: Path, work: Path) -> None:
    ckpts = work / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == f"step-{STEPS}"
    assert_same_final_state(straight / f"step-{STEPS}", ckpts / f"step-{STEPS}")
    assert not list(ckpts.glob(".step-*")), "a temporary checkpoint dir was left behind"
    steps = [e["step"] for e in events((ckpts / "metrics.jsonl").read_text(), "step")]
    assert steps == list(range(1, STEPS + 1))  # each step logged once, none lost


# Default suite: a kill between two files of a write (before the rename) and one between the rename and
# `latest`; every other point of every save is in the slow sweep below.
@pytest.mark.parametrize("point", ["optimizer", pytest.param("renamed", marks=pytest.mark.slow)])
def test_kill_inside_checkpoint_write_then_resume_is_bit_identical(tmp_path, cfg, straight, point):
    resumed = _kill_inside_save_then_resume(cfg, tmp_path, EVERY, point)
    start = events(resumed.stdout, "start")[0]
    # Killed before the rename: step-4 never existed, so the run starts over; after it: resumes at 4.
    expected = EVERY if FAULT_POINTS.index(point) >= FAULT_POINTS.index("renamed") else 0
    assert start["step"] == expected
    _check_resumed(straight, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("step", [EVERY, STEPS])
@pytest.mark.parametrize("point", FAULT_POINTS)
def test_kill_at_every_point_of_every_save(tmp_path, cfg, straight, step, point):
    _kill_inside_save_then_resume(cfg, tmp_path, step, point)
    _check_resumed(straight, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(5))
def test_kill9_at_random_moments_then_resume(tmp_path, cfg, straight, trial):
    """SIGKILL after a random delay (seeded per trial), up to three times in a row, then run to the end."""
    rng = random.Random(trial)
    for _ in range(rng.randint(1, 3)):
        proc = subprocess.Popen(
            trainer_cmd(cfg, tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
            cwd=REPO,
            start_new_session=True,
        )
        time.sleep(rng.uniform(2.0, 12.0))  # interpreter start is ~4 s, 8 steps ~2 s: covers both
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = run_trainer(cfg, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    _check_resumed(straight, tmp_path)


@pytest.mark.parametrize("point", ["weights", pytest.param("state", marks=pytest.mark.slow)])
def test_full_disk_during_checkpoint_write(tmp_path, cfg, straight, point):
    """ENOSPC while writing step-8: one line on stderr, step-4 and `latest` intact, the next run finishes."""
    res = run_trainer(cfg, tmp_path, env={FAULT_ENV: f"enospc@{STEPS}:{point}"})
    assert res.returncode == 2
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(err) == 1, res.stderr[-2000:]
    assert "No space left on device" in err[0] and f"step-{STEPS}" in err[0] and f"step-{EVERY} is intact" in err[0]
    ckpts = tmp_path / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == f"step-{EVERY}"
    assert not (ckpts / f"step-{STEPS}").exists() and not list(ckpts.glob(".step-*"))
    from crawl2score.model import load_checkpoint

    load_checkpoint(ckpts)  # the earlier checkpoint is complete and loads
    again = run_trainer(cfg, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert events(again.stdout, "start")[0]["step"] == EVERY
    assert_same_final_state(straight / f"step-{STEPS}", ckpts / f"step-{STEPS}")


def _drop_one(step: Path) -> str:
    tensors = load_file(str(step / "model.safetensors"))
    name = sorted(tensors)[0]
    del tensors[name]
    save_file(tensors, str(step / "model.safetensors"))
    return f"lacks 1 of this model's tensors (model.{name})"


def _reshape_one(step: Path) -> str:
    tensors = load_file(str(step / "optimizer.safetensors"))
    name = sorted(tensors)[0]
    shape = list(tensors[name].shape)
    tensors[name] = tensors[name].reshape(-1)[:1].clone()
    save_file(tensors, str(step / "optimizer.safetensors"))
    return f"optim.{name} has shape [1], this model's is {shape}"


def _cut(step: Path) -> str:
    data = (step / "model.safetensors").read_bytes()
    (step / "model.safetensors").write_bytes(data[: len(data) // 2])
    return "model.safetensors: cannot be read ("


def _garble_state(step: Path) -> str:
    (step / "train_state.json").write_text('{"step": 4,')
    return "train_state.json cannot be read (JSONDecodeError"


def _retype_state(step: Path) -> str:
    state = json.loads((step / "train_state.json").read_text())
    (step / "train_state.json").write_text(json.dumps({**state, "data_position": None}))
    return "train_state.json: data_position is null, not a valid int"


def _cut_rng(step: Path) -> str:
    (step / "rng-rank0.safetensors").write_bytes(b"\x08")
    return "rng-rank0.safetensors cannot be read ("


@pytest.mark.parametrize(
    "damage", [_drop_one, _reshape_one, _cut, _garble_state, _retype_state, _cut_rng], ids=lambda f: f.__name__[1:]
)
def test_damaged_checkpoint_is_one_line_and_kept(tmp_path, cfg, straight, damage):
    """A checkpoint damaged after it was written (or not this model's) once ended the resume in a KeyError,
    a safetensors or JSON traceback (exit 1, retried by the train task). Now: one line naming the step dir
    and what is wrong, exit 2, and nothing in the checkpoint directory changed."""
    import shutil

    ckpts = tmp_path / "w" / "checkpoints"
    ckpts.mkdir(parents=True)
    shutil.copytree(straight / "step-4", ckpts / "step-4")
    (ckpts / "latest").write_text("step-4\n")
    problem = damage(ckpts / "step-4")
    before = {p.name: p.read_bytes() for p in (ckpts / "step-4").iterdir()}
    res = run_trainer(cfg, tmp_path / "w")
    assert res.returncode == 2, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert f"{ckpts / 'step-4'}: cannot resume from this checkpoint: {problem}" in lines[0], lines[0]
    assert lines[0].endswith(
        "remove step-4 to resume from an earlier step, or rerun with --force (from the UI: force) to start over"
    )
    assert {p.name: p.read_bytes() for p in (ckpts / "step-4").iterdir()} == before
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step-4"]
