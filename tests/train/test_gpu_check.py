"""`benchmarks/gpu_check.sh --cpu-smoke`: the one-call GPU check runs end to end on CPU and writes every
check's JSON (the figures are the GPU run's business; here only that each check ran and is sane)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from tests.train.conftest import REPO

CHECKS = ("throughput", "moe_layer", "router_precision", "bf16_vs_fp32", "torchrun_ep1")


def test_gpu_check_cpu_smoke(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", GPU_CHECK_TIMEOUT_S="300")
    res = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu_check.sh"), str(tmp_path / "out"), "--cpu-smoke"],
        capture_output=True,
        text=True,
        env=env,
        timeout=360,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["mode"] == "cpu-smoke"
    for name in CHECKS:
        assert "error" not in summary[name], summary[name]
        assert (tmp_path / f"out/{name}.json").exists()
    assert summary["throughput"]["model_tflops"] > 0 and 0 < summary["throughput"]["mfu"] < 1
    assert summary["moe_layer"]["fast_over_dense"] > 0
    router = summary["router_precision"]
    assert router["ok"] and router["moved_frac"] == 0.0 and router["moved_frac_unprotected_bf16_linear"] > 0
    assert summary["bf16_vs_fp32"]["finite"] and summary["bf16_vs_fp32"]["max_rel_diff"] < 0.05
    ep1 = summary["torchrun_ep1"]
    assert ep1["returncode"] == 0 and ep1["world_size"] == 1 and ep1["steps"] == 4 and math.isfinite(ep1["loss"])
