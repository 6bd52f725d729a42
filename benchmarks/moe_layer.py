"""MoE layer forward+backward time against a dense SwiGLU FFN of the same active FLOPs, in one run.

The dense baseline has width (K + shared)·moe_inter_dim, so per token it does the same matmul FLOPs as
the shared experts plus K routed experts. Reported: median ms per fwd+bwd, TFLOP/s of the expert
matmuls (6·N·3·D·F_active), and the MoE/dense time ratio for each expert strategy of model/moe.py:
`fast` (what `use_grouped_mm=True` picks: padded bmm on a multi-threaded CPU within the padding bound,
`torch._grouped_mm` otherwise), `grouped` (CPU only: `torch._grouped_mm` forced, to compare with bmm in
the same run) and the exact `loop` over experts. Goal on an H200: fast ≤ 1.25× dense time. The header
prints the intra-op thread count and the load average: on a shared CPU the ratios, not the times, compare.

    python benchmarks/moe_layer.py                       # CPU-sized defaults
    python benchmarks/moe_layer.py --preset medium --tokens 16384 --dtype bf16 --device cuda

Legend: N tokens, D model dim, F hidden width.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crawl2score.model.layers import MLP  # noqa: E402
from crawl2score.model.moe import Experts, MoE, grouped_mm_supported  # noqa: E402
from crawl2score.model.presets import get_preset  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_fwd_bwd(modules: dict[str, torch.nn.Module], x_BTD: torch.Tensor, iters: int, warmup: int) -> dict:
    """Median seconds of one forward+backward (gradient w.r.t. input and weights) per module. Modules take
    turns within each round, so a load spike on a shared machine hits them all rather than one."""
    grad = torch.randn_like(x_BTD)
    times: dict[str, list[float]] = {name: [] for name in modules}
    for i in range(warmup + iters):
        for name, module in modules.items():
            x = x_BTD.detach().requires_grad_()
            _sync(x.device)
            t0 = time.perf_counter()
            module(x).backward(grad)
            _sync(x.device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
            module.zero_grad(set_to_none=True)
    return {name: statistics.median(t) for name, t in times.items()}


def measure(
    preset: str | None, tokens: int, device: torch.device, dtype: torch.dtype, iters: int, warmup: int, log=print
) -> dict:
    """Median fwd+bwd ms and TFLOP/s of the dense twin and each MoE strategy, and MoE/dense time ratios."""
    if preset:
        args = get_preset(preset)
    else:  # V3's expert count and top-k at a width a 2-core CPU can time
        args = get_preset("medium").replace(dim=512, moe_inter_dim=128)
    args = args.replace(n_expert_groups=1, n_limited_groups=1)
    torch.manual_seed(0)
    active_F = (args.n_activated_experts + args.n_shared_experts) * args.moe_inter_dim
    dense = MLP(args.dim, active_F).to(device, dtype)
    x = torch.randn(1, tokens, args.dim, device=device, dtype=dtype)
    flops = 6 * tokens * 3 * args.dim * active_F
    load = " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    log(
        f"# {device} {dtype}, N={tokens} tokens, D={args.dim}, E={args.n_routed_experts} top-{args.n_activated_experts}"
        f" + {args.n_shared_experts} shared, F={args.moe_inter_dim}; dense F={active_F};"
        f" {torch.get_num_threads()} threads, load average {load}"
    )
    # (name, use_grouped_mm, cpu_bmm_max_pad); `grouped` differs from `fast` only on CPU.
    modes = [("fast", True, Experts.cpu_bmm_max_pad), ("loop", False, Experts.cpu_bmm_max_pad)]
    if device.type == "cpu":
        modes.insert(1, ("grouped", True, 0.0))
    if not grouped_mm_supported(device, dtype):
        log(f"(torch._grouped_mm unsupported for {device.type}/{dtype}: it falls back to the loop)")
    modules: dict[str, torch.nn.Module] = {"dense": dense}
    for name, grouped, max_pad in modes:
        moe = MoE(args.replace(use_grouped_mm=grouped)).to(device, dtype).train()
        moe.experts.cpu_bmm_max_pad = max_pad
        torch.manual_seed(1)  # same weights, hence same routing, in every mode
        for prm in moe.parameters():
            torch.nn.init.normal_(prm, std=0.02)
        modules[name] = moe
    with torch.no_grad():  # the padded-bmm bound is on E·C / M (largest expert's rows over the mean)
        idx_NK = modules["fast"].gate(x.view(-1, args.dim))[0]
    counts_E = torch.bincount(idx_NK.flatten(), minlength=args.n_routed_experts)
    pad = args.n_routed_experts * int(counts_E.max()) / idx_NK.numel()
    log(f"(routing: E·C / M = {pad:.2f})")
    results = time_fwd_bwd(modules, x, iters, warmup)
    out = {"preset": preset, "tokens": tokens, "device": str(device), "dtype": str(dtype), "padding_ratio": pad}
    for name, t in results.items():
        out[name] = {"ms": t * 1e3, "tflops": flops / t / 1e12, "over_dense": t / results["dense"]}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=None, help="take dim/experts from a preset (default: a CPU-sized layer)")
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="fp32 or bf16 (default bf16 on cuda, fp32 on cpu)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    r = measure(a.preset, a.tokens, device, dtype, a.iters, a.warmup)
    print(f"dense SwiGLU      {r['dense']['ms']:9.2f} ms  {r['dense']['tflops']:7.3f} TFLOP/s  1.00x")
    for name in [k for k in r if isinstance(r[k], dict) and k != "dense"]:
        m = r[name]
        print(f"MoE ({name:7s})   {m['ms']:9.2f} ms  {m['tflops']:7.3f} TFLOP/s  {m['over_dense']:5.2f}x dense")
    print(f"loop / fast       {r['loop']['ms'] / r['fast']['ms']:.2f}x")


if __name__ == "__main__":
    main()
