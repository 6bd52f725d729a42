"""`train.expert_parallel = 2` on CPU (gloo, 2 ranks, DDP for the other weights): the same losses, load
and weights as one process holding every expert, and its whole-model checkpoint resumes on one process."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.train.conftest import events, run_trainer, tiny_config, write_config


@pytest.mark.parametrize("mode", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_ep2_matches_one_process_and_resumes_on_one(mode, tmp_path, tokens_dir):
    ref = run_trainer(
        write_config(tmp_path / "ref.json", tiny_config(tokens_dir, steps=6, checkpoint_every=3)), tmp_path / "ref"
    )
    assert ref.returncode == 0, ref.stderr[-2000:]
    cfg = tiny_config(tokens_dir, steps=6, checkpoint_every=3, expert_parallel=2, micro_batch_size=3, parallelism=mode)
    ep = run_trainer(write_config(tmp_path / "ep.json", cfg), tmp_path / "ep", nproc=2)
    assert ep.returncode == 0, ep.stderr[-3000:]
    assert events(ep.stdout, "start")[0]["expert_parallel"] == 2
    want, got = events(ref.stdout, "step"), events(ep.stdout, "step")
    assert [e["step"] for e in got] == [e["step"] for e in want]
    for r, g in zip(want, got, strict=True):
        assert g["loss"] == pytest.approx(r["loss"], rel=1e-5, abs=1e-6)
        assert g["grad_norm"] == pytest.approx(r["grad_norm"], rel=1e-4)
        assert g["max_vio"] == pytest.approx(r["max_vio"], abs=1e-6)  # global counts, global bias update
        assert all(1.0 <= f <= 2.0 for f in g["ep_fanout"].values())
    a = load_file(str(tmp_path / "ref/checkpoints/step-6/model.safetensors"))
    b = load_file(str(tmp_path / "ep/checkpoints/step-6/model.safetensors"))
    assert a.keys() == b.keys() and b["layers.1.ffn.experts.w1"].shape[0] == 8  # the whole model
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=2e-5)  # Adam amplifies sum-order noise

    # The EP=2 step-3 checkpoint resumes on one process holding every expert and ends like the reference.
    shutil.rmtree(tmp_path / "ep/checkpoints/step-6")
    one = write_config(tmp_path / "one.json", {**cfg, "train": {**cfg["train"], "expert_parallel": 1}})
    res = run_trainer(one, tmp_path / "ep")
    assert res.returncode == 0, res.stderr[-3000:]
    assert events(res.stdout, "start")[0]["step"] == 3
    assert events(res.stdout, "step")[-1]["loss"] == pytest.approx(want[-1]["loss"], rel=1e-5)


@pytest.mark.slow
def test_ep2_with_replicas_on_four_ranks_then_resume_with_ep4(tmp_path, tokens_dir):
    """4 ranks as 2 EP groups of 2 (each expert slice on 2 replicas: gradients reduced over them), then
    its step-3 checkpoint resumed with 4-way EP; both end like one process (slow: 4 processes on CPU)."""
    ref = run_trainer(
        write_config(tmp_path / "ref.json", tiny_config(tokens_dir, steps=6, checkpoint_every=3)), tmp_path / "ref"
    )
    assert ref.returncode == 0, ref.stderr[-2000:]
    want = events(ref.stdout, "step")
    cfg = tiny_config(tokens_dir, steps=6, checkpoint_every=3, expert_parallel=2, micro_batch_size=1)
    ep = run_trainer(write_config(tmp_path / "ep.json", cfg), tmp_path / "ep", nproc=4, timeout=600)
    assert ep.returncode == 0, ep.stderr[-3000:]
    for r, g in zip(want, events(ep.stdout, "step"), strict=True):
        assert g["loss"] == pytest.approx(r["loss"], rel=1e-5, abs=1e-6)
    shutil.rmtree(tmp_path / "ep/checkpoints/step-6")
    four = write_config(tmp_path / "four.json", {**cfg, "train": {**cfg["train"], "expert_parallel": 4}})
    res = run_trainer(four, tmp_path / "ep", nproc=4, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert events(res.stdout, "start")[0]["step"] == 3
    assert events(res.stdout, "step")[-1]["loss"] == pytest.approx(want[-1]["loss"], rel=1e-5)
