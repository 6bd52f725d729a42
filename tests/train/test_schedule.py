"""The schedules are pure functions of the step: shape checks on the report's phases."""

from __future__ import annotations

import pytest

from crawl2score.model.schedule import batch_size_at, bias_speed_at, lr_at, mtp_lambda_at
from crawl2score.model.train_config import TrainArgs


def test_lr_warmup_constant_cosine_floor():
    a = TrainArgs(steps=1000, warmup_steps=100, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(a, 1) == pytest.approx(0.01)
    assert lr_at(a, 100) == 1.0
    assert lr_at(a, 500) == 1.0 and lr_at(a, 676) == 1.0
    mid = (676 + 966) // 2
    assert lr_at(a, mid) == pytest.approx(0.55, abs=0.01)
    assert lr_at(a, 966) == pytest.approx(0.1) and lr_at(a, 1000) == pytest.approx(0.1)
    lrs = [lr_at(a, s) for s in range(676, 967)]
    assert all(x >= y for x, y in zip(lrs, lrs[1:], strict=False))


def test_batch_ramp_multiple_of_world():
    a = TrainArgs(steps=100, global_batch_size=64, batch_ramp_start=8, batch_ramp_frac=0.5)
    sizes = [batch_size_at(a, s, world_size=4) for s in range(1, 101)]
    assert sizes[0] == 8 and sizes[-1] == 64 and max(sizes) == 64
    assert all(s % 4 == 0 for s in sizes) and sizes == sorted(sizes)
    assert batch_size_at(TrainArgs(global_batch_size=8), 1) == 8


def test_balancing_schedules():
    a = TrainArgs(steps=1000)
    assert mtp_lambda_at(a, 1) == 0.3 and mtp_lambda_at(a, 1000) == 0.1
    assert bias_speed_at(a, 1) == 0.001 and bias_speed_at(a, 1000) == 0.0


def test_unknown_key_and_bad_values():
    with pytest.raises(ValueError, match="unknown"):
        TrainArgs.from_dict({"stepz": 3})
    with pytest.raises(ValueError):
        TrainArgs(parallelism="tp")
