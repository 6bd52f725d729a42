"""One-call GPU check (run by `benchmarks/gpu_check.sh`): five measurements, one JSON file each under OUT,
and `OUT/summary.json` with the headline figures.

* `throughput`: the real `Trainer` (`model.train`) on `medium`, bf16 autocast, compiled blocks, stepped by
  hand (no checkpoint); model TFLOP/s from `model.info.train_flops_per_token` (the MFU count of the
  trainer and of `model-info`) and MFU against the measured H200 bf16 peak (740). Goal: ≥ 300 TFLOP/s.
* `moe_layer`: `benchmarks/moe_layer.py` on `medium`'s MoE layer against a dense SwiGLU of equal active
  FLOPs. Goal: ≤ 1.25× the dense time.
* `router_precision`: DeepSeek-V3's router shape at init scale, under bf16 autocast against fp32: tokens
  whose expert set differs (must be 0 with the router's autocast-off region) and, for comparison, what an
  unprotected autocast linear would select.
* `bf16_vs_fp32`: 50 steps of the same `small` run (same weights, same data) with bf16 autocast and in
  fp32: per-step losses and their largest relative difference.
* `torchrun_ep1`: the trainer's CLI under `torchrun --nproc-per-node 1` with `train.expert_parallel = 1`.

`--cpu-smoke` runs the same code on CPU with tiny shapes (under a minute): it checks the script, not the
figures. Imports only torch, numpy, safetensors and `crawl2score.model` (PYTHONPATH = the repository root),
so it runs on a bare GPU machine. Legend: S sequence length, B batch (sequences).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from crawl2score.model.moe import Router  # noqa: E402
from crawl2score.model.presets import get_preset  # noqa: E402
from crawl2score.model.train import Trainer  # noqa: E402

H200_BF16_PEAK_TFLOPS = 740.0  # measured matmul peak on this project's H200 (model.train.PEAK_TFLOPS)


def write_tokens(out: Path, n_tokens: int, vocab: int, seed: int = 0) -> Path:
    """A token directory in `model.shards` layout: documents of noisy arithmetic runs (learnable, so a
    loss curve falls), EOS = vocab − 1 after each."""
    rng = np.random.default_rng(seed)
    eos, docs, total = vocab - 1, [], 0
    while total < n_tokens:
        n = int(rng.integers(20, 400))
        doc = (rng.integers(0, eos) + rng.integers(1, 9) * np.arange(n) + rng.integers(0, 2, n)) % eos
        docs.append(np.append(doc, eos).astype("<u4"))
        total += n + 1
    flat = np.concatenate(docs)
    out.mkdir(parents=True, exist_ok=True)
    flat.tofile(out / "shard-00000.bin")
    np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype("<i8").tofile(out / "shard-00000.idx")
    shard = {"path": "shard-00000.bin", "index": "shard-00000.idx", "num_tokens": len(flat), "num_docs": len(docs)}
    manifest = {"dtype": "uint32", "vocab_size": vocab, "bos_id": eos, "eos_id": eos, "pad_id": eos}
    (out / "manifest.json").write_text(json.dumps({**manifest, "shards": [shard]}))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _trainer(cfg: dict, workdir: Path) -> Trainer:
    with contextlib.redirect_stdout(io.StringIO()):  # its start line is not this script's output
        return Trainer(cfg, workdir)


def throughput(tmp: Path, smoke: bool) -> dict:
    if smoke:
        model = {"preset": "tiny", "vocab_size": 256, "max_seq_len": 64}
        train = {"seq_len": 32, "global_batch_size": 4, "micro_batch_size": 4, "dtype": "fp32"}
        warmup, steps, vocab = 1, 2, 256
    else:
        model = {"preset": "medium", "max_seq_len": 4096}
        train = {"seq_len": 4096, "global_batch_size": 4, "micro_batch_size": 4, "dtype": "bf16", "compile": True}
        warmup, steps, vocab = 3, 8, get_preset("medium").vocab_size
    S, B = train["seq_len"], train["global_batch_size"]
    tokens = write_tokens(tmp / "tok-throughput", (warmup + steps + 1) * B * (S + 1), vocab)
    train.update(steps=1000, warmup_steps=10, lr=1e-4, tokens_dir=str(tokens))
    t = _trainer({"model": model, "train": train}, tmp / "throughput")
    times = []
    for i in range(warmup + steps):
        _sync(t.device)
        t0 = time.perf_counter()
        t.train_step()
        _sync(t.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    tflops = t.flops_per_token * B * S / step_s / 1e12
    out = {
        "preset": model["preset"],
        "seq_len": S,
        "batch": B,
        "dtype": train["dtype"],
        "compile": train.get("compile", False),
        "step_s_median": step_s,
        "tokens_per_s": B * S / step_s,
        "flops_per_token": t.flops_per_token,
        "model_tflops": tflops,
        "peak_tflops": H200_BF16_PEAK_TFLOPS,
        "mfu": tflops / H200_BF16_PEAK_TFLOPS,
        "peak_mem_gib": torch.cuda.max_memory_allocated(t.device) / 2**30 if t.device.type == "cuda" else None,
        "goal_tflops": 300.0,
    }
    del t
    _free()
    return out


def moe_layer(smoke: bool) -> dict:
    from moe_layer import measure

    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    preset, tokens, iters = (None, 256, 2) if smoke else ("medium", 16384, 10)
    r = measure(preset, tokens, device, dtype, iters, 1 if smoke else 3, log=lambda *_: None)
    r["fast_over_dense"] = r["fast"]["over_dense"]
    r["goal_over_dense"] = 1.25
    return r


def router_precision(smoke: bool) -> dict:
    """Selection and weights of V3's router (256 experts, 8 groups, 4 kept, top-8; init std 0.006) under
    bf16 autocast, against fp32."""
    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    args = get_preset("deepseek-v3")
    n = 512 if smoke else 16384
    torch.manual_seed(0)
    r = Router(args).to(device)
    torch.nn.init.normal_(r.weight, std=args.init_std)
    x = torch.randn(n, args.dim, device=device)
    idx32, w32, _ = r(x)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        idx16, w16, _ = r(x)
        unprotected = F.linear(x, r.weight)
    idx_old, w_old, _ = r.select(unprotected)

    def moved(idx: torch.Tensor) -> float:
        return (idx.sort(-1).values != idx32.sort(-1).values).any(-1).float().mean().item()

    # Node-limited dispatch: with 64-way EP over 8 nodes (V3), node g holds expert group g, so the group
    # limit (4 of 8) bounds the nodes a token's 8 copies reach; without it they spread further.
    def nodes(idx: torch.Tensor) -> float:
        node_NK = (idx // (args.n_routed_experts // args.n_expert_groups)).sort(-1).values
        return (1 + (node_NK[:, 1:] != node_NK[:, :-1]).sum(-1)).float().mean().item()

    free = Router(args.replace(n_expert_groups=1, n_limited_groups=1)).to(device)
    with torch.no_grad():
        free.weight.copy_(r.weight)
    return {
        "tokens": n,
        "device": str(device),
        "nodes_per_token_group_limited": nodes(idx32),
        "nodes_per_token_unlimited": nodes(free(x)[0]),
        "gate_dtype_under_autocast": str(w16.dtype),
        "moved_frac": moved(idx16),
        "max_abs_weight_diff": (w16 - w32).abs().max().item(),
        "moved_frac_unprotected_bf16_linear": moved(idx_old),
        "ok": moved(idx16) == 0.0 and torch.equal(w16, w32),
    }


def bf16_vs_fp32(tmp: Path, smoke: bool) -> dict:
    if smoke:
        model = {"preset": "tiny", "vocab_size": 256, "max_seq_len": 64}
        train = {"seq_len": 32, "global_batch_size": 4, "micro_batch_size": 4}
        steps, vocab = 5, 256
    else:
        model = {"preset": "small", "vocab_size": 4096, "max_seq_len": 1024}
        train = {"seq_len": 1024, "global_batch_size": 16, "micro_batch_size": 16}
        steps, vocab = 50, 4096
    tokens = write_tokens(
        tmp / "tok-precision", (steps + 1) * train["global_batch_size"] * (train["seq_len"] + 1), vocab
    )
    train.update(steps=steps, warmup_steps=max(steps // 10, 1), lr=1e-3, tokens_dir=str(tokens))
    losses = {}
    for dtype in ("bf16", "fp32"):
        t = _trainer({"model": model, "train": {**train, "dtype": dtype}}, tmp / f"precision-{dtype}")
        losses[dtype] = [t.train_step()["ce_loss"] for _ in range(steps)]
        del t
        _free()
    rel = [abs(a - b) / abs(b) for a, b in zip(losses["bf16"], losses["fp32"], strict=True)]
    return {
        "preset": model["preset"],
        "steps": steps,
        "ce_bf16": losses["bf16"],
        "ce_fp32": losses["fp32"],
        "max_rel_diff": max(rel),
        "final_rel_diff": rel[-1],
        "finite": all(math.isfinite(x) for v in losses.values() for x in v),
    }


def torchrun_ep1(tmp: Path, smoke: bool) -> dict:
    model = {"preset": "tiny", "vocab_size": 256, "max_seq_len": 64}
    train = {"steps": 4, "seq_len": 32, "global_batch_size": 4, "micro_batch_size": 4, "warmup_steps": 1}
    train.update(expert_parallel=1, log_every=1, checkpoint_every=4, lr=1e-3)
    train["tokens_dir"] = str(write_tokens(tmp / "tok-ep1", 5 * 4 * 33, 256))
    if not smoke and torch.cuda.is_available():
        train["dtype"] = "bf16"
    cfg = tmp / "ep1.json"
    cfg.write_text(json.dumps({"model": model, "train": train}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
    cmd += ["-m", "crawl2score.model.train", "--config", str(cfg), "--workdir", str(tmp / "ep1")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    lines = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")]
    start = next((e for e in lines if e["event"] == "start"), {})
    done = next((e for e in lines if e["event"] == "done"), {})
    return {
        "returncode": res.returncode,
        "wall_s": time.perf_counter() - t0,
        "world_size": start.get("world_size"),
        "device": start.get("device"),
        "steps": done.get("step"),
        "loss": done.get("loss"),
        "stderr_tail": res.stderr[-1500:] if res.returncode else "",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the JSON results")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU: checks the script end to end")
    ap.add_argument("--only", default=None, help="comma-separated subset of the checks")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "tmp"
    if a.cpu_smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the trainer's device=auto must pick the CPU too
    checks = {
        "throughput": lambda: throughput(tmp, a.cpu_smoke),
        "moe_layer": lambda: moe_layer(a.cpu_smoke),
        "router_precision": lambda: router_precision(a.cpu_smoke),
        "bf16_vs_fp32": lambda: bf16_vs_fp32(tmp, a.cpu_smoke),
        "torchrun_ep1": lambda: torchrun_ep1(tmp, a.cpu_smoke),
    }
    chosen = a.only.split(",") if a.only else list(checks)
    summary: dict = {
        "mode": "cpu-smoke" if a.cpu_smoke else "gpu",
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not a.cpu_smoke else "cpu",
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
    failed = 0
    for name in chosen:
        t0 = time.perf_counter()
        try:
            result = checks[name]()
        except Exception as exc:  # one failing check must not hide the others' figures
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
            failed += 1
        result["seconds"] = round(time.perf_counter() - t0, 2)
        (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=float))
        print(f"gpu_check: {name} done in {result['seconds']} s", file=sys.stderr, flush=True)
        summary[name] = {k: v for k, v in result.items() if not isinstance(v, list | dict) or k == "error"}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print(json.dumps(summary, indent=2, default=float))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
