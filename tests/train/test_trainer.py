"""The Trainer a reader can hold: built in-process, stepped by hand, its figures from the shared helpers."""

from __future__ import annotations

import contextlib
import io
import math

from crawl2score.model.info import train_flops_per_token
from crawl2score.model.train import Trainer
from tests.train.conftest import tiny_config


def test_trainer_steps_by_hand_with_the_schedule_and_flops_helper(tmp_path, tokens_dir):
    cfg = tiny_config(tokens_dir, steps=6, batch_ramp_start=2, global_batch_size=8, warmup_steps=0)
    with contextlib.redirect_stdout(io.StringIO()):
        t = Trainer(cfg, tmp_path / "w")
    assert t.flops_per_token == train_flops_per_token(t.model_args, 32)
    seen = []
    for _ in range(3):
        tokens_before = t.position * t.args.seq_len
        figures = t.train_step()
        assert figures["lr"] == t.schedule.lr(t.step, tokens_before)
        assert figures["batch_size"] == t.schedule.batch_size(tokens_before)
        seen.append(figures["batch_size"])
    assert seen[0] == 2 and seen == sorted(seen)  # the ramp, counted in tokens
    assert t.position == sum(seen) and math.isfinite(figures["loss"])
    assert not (tmp_path / "w/checkpoints/step-3").exists()  # train_step alone never checkpoints
