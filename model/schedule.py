"""Per-step schedules of a run, as pure functions of the step number (1-based optimizer steps).

Pure functions rather than a stateful LR scheduler: resuming needs only the step, so a checkpoint can
never hold a scheduler that disagrees with the config. Shapes follow DeepSeek-V3 §4.2, with the report's
phase boundaries expressed as fractions of the run (`TrainArgs`).
"""

from __future__ import annotations

import math

from crawl2score.model.train_config import TrainArgs


def lr_at(args: TrainArgs, step: int) -> float:
    """Linear warm-up to `lr`, constant, cosine to `lr·min_lr_ratio`, then constant at that floor."""
    S = args.steps
    floor = args.lr * args.min_lr_ratio
    if args.warmup_steps > 0 and step <= args.warmup_steps:
        return args.lr * step / args.warmup_steps
    start = max(round(args.decay_start_frac * S), args.warmup_steps)
    end = max(round(args.decay_end_frac * S), start)
    if step <= start:
        return args.lr
    if step >= end:
        return floor
    t = (step - start) / (end - start)
    return floor + 0.5 * (args.lr - floor) * (1.0 + math.cos(math.pi * t))


def batch_size_at(args: TrainArgs, step: int, world_size: int = 1) -> int:
    """Global batch (sequences) of a step: linear ramp from `batch_ramp_start`, in multiples of the world
    size so every rank gets the same number of sequences."""
    full = args.global_batch_size
    ramp_steps = round(args.batch_ramp_frac * args.steps)
    if args.batch_ramp_start <= 0 or ramp_steps <= 0 or step > ramp_steps:
        size = full
    else:
        size = args.batch_ramp_start + (full - args.batch_ramp_start) * (step - 1) / ramp_steps
    size = int(size) // world_size * world_size
    return max(world_size, min(size, full))


def mtp_lambda_at(args: TrainArgs, step: int) -> float:
    return args.mtp_lambda if step <= round(args.mtp_lambda_switch_frac * args.steps) else args.mtp_lambda_late


def bias_speed_at(args: TrainArgs, step: int) -> float:
    return args.bias_update_speed if step <= round(args.bias_update_stop_frac * args.steps) else 0.0
