"""The run's schedules (batch size, LR, MTP weight, bias speed), with every boundary in tokens.

DeepSeek-V3 §4.2 states its schedule in tokens of a 14.8T-token run: batch 3,072 → 15,360 sequences
over the first 469B, LR 2.2e-4 until 10T, cosine to 2.2e-5 until 14.3T, 2.2e-5 for 333B, 7.3e-6 for the
last 167B; γ = 0.001 until 14.3T; λ = 0.3 until 10T. `TrainArgs` keeps those figures as written and a
`Schedule` scales them by run_tokens / ref_tokens, where run_tokens is what the run's `steps` consume
with the ramp on (found below). Only the warm-up is in steps, as in the report (2,000 steps).

Pure functions of (step, tokens consumed before the step) rather than a stateful LR scheduler: a
resume needs only the step and the data position, so a checkpoint can never hold a scheduler that
disagrees with the config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from crawl2score.model.train_config import TrainArgs

# V3's own run, to scale its 2,000 warm-up steps: 4,096-token sequences, the ramp, 14.8T tokens.
V3_WARMUP_STEPS = 2000
V3_SEQ_LEN, V3_BATCH_START, V3_BATCH = 4096, 3072, 15360


def _ramp_batch(tokens: float, start: int, full: int, ramp_tokens: float, world_size: int) -> int:
    """Global batch after `tokens` tokens: linear in tokens from `start` to `full`, floored to a multiple
    of the world size so every rank gets the same number of sequences."""
    if start <= 0 or tokens >= ramp_tokens:
        size = full
    else:
        size = int(start + (full - start) * tokens / ramp_tokens) // world_size * world_size
    return max(world_size, min(size, full))


def _tokens_after(steps: int, seq_len: int, start: int, full: int, ramp_tokens: float, world_size: int) -> int:
    """Tokens consumed by `steps` steps: stepped through the ramp, then full batches."""
    tokens, n = 0, 0
    while n < steps and start > 0 and tokens < ramp_tokens:
        tokens += _ramp_batch(tokens, start, full, ramp_tokens, world_size) * seq_len
        n += 1
    return tokens + (steps - n) * full * seq_len


def _steps_for(tokens: float, seq_len: int, start: int, full: int, ramp_tokens: float) -> int:
    """Steps a run of `tokens` takes (the inverse of `_tokens_after`)."""
    t, n = 0, 0
    while t < ramp_tokens:
        t += _ramp_batch(t, start, full, ramp_tokens, 1) * seq_len
        n += 1
    return n + math.ceil(max(tokens - t, 0) / (full * seq_len))


V3_STEPS = _steps_for(14.8e12, V3_SEQ_LEN, V3_BATCH_START, V3_BATCH, 469e9)  # 242,785


@dataclass(frozen=True)
class Schedule:
    """A run's schedules, built once from its `TrainArgs` and world size (`Schedule.build`)."""

    args: TrainArgs
    world_size: int
    run_tokens: int  # tokens the run's `steps` consume
    scale: float  # run_tokens / ref_tokens: report tokens → this run's tokens
    warmup_steps: int

    @classmethod
    def build(cls, args: TrainArgs, world_size: int = 1) -> Schedule:
        """The ramp's length is a share of run_tokens, and run_tokens depends on the ramp: iterate to a
        fixed point (a contraction: the ramp is 3.2% of the run), then count run_tokens exactly."""
        a, f = args, args.batch_ramp_tokens / args.ref_tokens
        run = a.steps * a.global_batch_size * a.seq_len
        for _ in range(50):
            new = _tokens_after(a.steps, a.seq_len, a.batch_ramp_start, a.global_batch_size, f * run, world_size)
            done = abs(new - run) <= a.global_batch_size * a.seq_len
            run = new
            if done:
                break
        warmup = a.warmup_steps
        if warmup is None:
            warmup = max(1, round(V3_WARMUP_STEPS * a.steps / V3_STEPS))
        return cls(a, world_size, run, run / a.ref_tokens, warmup)

    def tokens(self, report_tokens: float) -> float:
        """A boundary in the report's tokens, in this run's tokens."""
        return report_tokens * self.scale

    def batch_size(self, tokens: int) -> int:
        """Global batch (sequences) of the step that starts after `tokens` tokens."""
        a = self.args
        ramp = self.tokens(a.batch_ramp_tokens)
        return _ramp_batch(tokens, a.batch_ramp_start, a.global_batch_size, ramp, self.world_size)

    def lr(self, step: int, tokens: int) -> float:
        """Linear warm-up over steps, then by tokens: constant, cosine to the floor, floor, final LR."""
        a = self.args
        if self.warmup_steps > 0 and step <= self.warmup_steps:
            return a.lr * step / self.warmup_steps
        start, end = self.tokens(a.lr_decay_start_tokens), self.tokens(a.lr_decay_end_tokens)
        floor = a.lr * a.min_lr_ratio
        if tokens < start:
            return a.lr
        if tokens < end:
            t = (tokens - start) / (end - start)
            return floor + 0.5 * (a.lr - floor) * (1.0 + math.cos(math.pi * t))
        if tokens < self.tokens(a.lr_final_start_tokens):
            return floor
        return a.lr * a.final_lr_ratio

    def mtp_lambda(self, tokens: int) -> float:
        a = self.args
        return a.mtp_lambda if tokens < self.tokens(a.mtp_lambda_switch_tokens) else a.mtp_lambda_late

    def bias_speed(self, tokens: int) -> float:
        a = self.args
        return a.bias_update_speed if tokens < self.tokens(a.bias_update_stop_tokens) else 0.0
