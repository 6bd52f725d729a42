"""The schedules are pure functions of (step, tokens): the report's phases, in tokens, scaled to the run."""

from __future__ import annotations

import pytest

from crawl2score.model.schedule import V3_STEPS, Schedule
from crawl2score.model.train_config import TrainArgs


def _tokens_per_step(s: Schedule) -> list[int]:
    """Tokens consumed before each step 1..steps, as the trainer advances them."""
    out, t = [], 0
    for _ in range(s.args.steps):
        out.append(t)
        t += s.batch_size(t) * s.args.seq_len
    assert t == s.run_tokens  # the budget is what the steps consume
    return out


def test_lr_has_the_reports_four_phases_in_tokens():
    a = TrainArgs(steps=2000, warmup_steps=10, lr=1.0, seq_len=16, global_batch_size=8)
    s = Schedule.build(a)
    assert s.run_tokens == 2000 * 8 * 16 and s.scale == pytest.approx(s.run_tokens / 14.8e12)
    tok = _tokens_per_step(s)
    lrs = [s.lr(i + 1, t) for i, t in enumerate(tok)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == 1.0
    frac = [t / s.run_tokens for t in tok]
    # Constant until 10/14.8 of the tokens, cosine to 0.1 until 14.3/14.8, 0.1 for 333B, 7.3e-6/2.2e-4 after.
    const = [x for x, f in zip(lrs, frac, strict=True) if 10 / 14.8 > f and x == 1.0]
    assert len(const) == pytest.approx(2000 * 10 / 14.8 - 10, abs=2)
    cosine = [x for x, f in zip(lrs, frac, strict=True) if 10 / 14.8 <= f < 14.3 / 14.8]
    assert all(a >= b for a, b in zip(cosine, cosine[1:], strict=False)) and 0.1 < min(cosine) < max(cosine) <= 1
    floor = [x for x, f in zip(lrs, frac, strict=True) if 14.3 / 14.8 <= f < 14.633 / 14.8]
    final = [x for x, f in zip(lrs, frac, strict=True) if f >= 14.633 / 14.8]
    assert floor == pytest.approx([0.1] * len(floor)) and len(floor) == pytest.approx(2000 * 0.333 / 14.8, abs=1)
    assert final == pytest.approx([7.3e-6 / 2.2e-4] * len(final)) and len(final) == pytest.approx(
        2000 * 0.167 / 14.8, abs=1
    )


def test_batch_ramp_counted_in_tokens():
    """3,072 → 15,360 over the first 469B of 14.8T tokens, scaled: the ramp ends at the same share of the
    run's tokens, each size a multiple of the world size, and the budget accounts for the smaller batches."""
    a = TrainArgs(steps=4000, seq_len=16, global_batch_size=320, batch_ramp_start=64)
    s = Schedule.build(a, world_size=4)
    tok = _tokens_per_step(s)
    sizes = [s.batch_size(t) for t in tok]
    assert sizes[0] == 64 and sizes[-1] == 320 and sizes == sorted(sizes) and all(x % 4 == 0 for x in sizes)
    ramp_end = next(t for t, b in zip(tok, sizes, strict=True) if b == 320)
    assert ramp_end / s.run_tokens == pytest.approx(469 / 14800, rel=0.05)
    # Halfway through the ramp in tokens, the batch is halfway too (not halfway in steps).
    half = next(t for t in tok if t >= s.tokens(469e9) / 2)
    assert s.batch_size(half) == pytest.approx((64 + 320) / 2, abs=8)
    assert s.run_tokens < 4000 * 320 * 16
    assert Schedule.build(TrainArgs(global_batch_size=8)).batch_size(0) == 8  # ramp off by default


def test_warmup_default_scales_v3s_2000_steps():
    assert 240_000 < V3_STEPS < 245_000
    assert Schedule.build(TrainArgs(steps=20000)).warmup_steps == round(2000 * 20000 / V3_STEPS)
    assert Schedule.build(TrainArgs(steps=40)).warmup_steps == 1
    assert Schedule.build(TrainArgs(steps=40, warmup_steps=5)).warmup_steps == 5


def test_balancing_schedules_in_tokens():
    s = Schedule.build(TrainArgs(steps=1000))
    assert s.mtp_lambda(0) == 0.3 and s.mtp_lambda(s.run_tokens - 1) == 0.1
    assert s.mtp_lambda(int(s.tokens(9.9e12))) == 0.3 and s.mtp_lambda(int(s.tokens(10.1e12))) == 0.1
    assert s.bias_speed(0) == 0.001 and s.bias_speed(int(s.tokens(14.4e12))) == 0.0


def test_unknown_key_and_bad_values():
    with pytest.raises(ValueError, match="unknown"):
        TrainArgs.from_dict({"stepz": 3})
    with pytest.raises(ValueError):
        TrainArgs(parallelism="tp")
    with pytest.raises(ValueError, match="lr_decay_start_tokens"):
        TrainArgs(lr_decay_start_tokens=15e12)
