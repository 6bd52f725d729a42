"""Expert parallelism on CPU (gloo, 2 processes): forward, loss, balancing counts and every gradient of the
sharded model equal the whole model's on the full batch; group-limited routing bounds the fan-out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, groups: int, limited: int, nproc: int = 2) -> list[dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    cmd += [str(REPO / "tests/model/ep_worker.py"), str(tmp_path), str(groups), str(limited)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(nproc)]


@pytest.mark.parametrize(("groups", "limited"), [(4, 2), (2, 1)])
def test_two_ranks_equal_the_whole_model(tmp_path, groups, limited):
    results = _run(tmp_path, groups, limited)
    for r in results:
        assert r["n_local"] == 4  # 8 routed experts over 2 ranks
        bad = {k: v for k, v in r["worst"].items() if v > 1e-4}
        assert not bad, bad  # relative to the largest value compared
        assert any(k.startswith("grad.") and ".experts." in k for k in r["worst"])
        fan = list(r["fanout"].values())
        assert fan and all(1.0 <= f <= 2.0 for f in fan)
        if limited == 1:  # one group per rank, one group per token: every token reaches one rank
            assert fan == pytest.approx([1.0] * len(fan))
