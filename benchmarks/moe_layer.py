"""MoE layer forward+backward time against a dense SwiGLU FFN of the same active FLOPs, in one run.

The dense baseline has width (K + shared)·moe_inter_dim, so per token it does the same matmul FLOPs as
the shared experts plus K routed experts. Reported: median ms per fwd+bwd, TFLOP/s of the expert
matmuls (6·N·3·D·F_active), and the MoE/dense time ratio for grouped GEMM (`torch._grouped_mm`) and the
exact Python loop over experts. Goal on an H200: grouped ≤ 1.25× dense time.

    python benchmarks/moe_layer.py                       # CPU-sized defaults
    python benchmarks/moe_layer.py --preset medium --tokens 16384 --dtype bf16 --device cuda

Legend: N tokens, D model dim, F hidden width.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.layers import MLP  # noqa: E402
from model.moe import MoE, grouped_mm_supported  # noqa: E402
from model.presets import get_preset  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_fwd_bwd(module: torch.nn.Module, x_BTD: torch.Tensor, iters: int, warmup: int) -> float:
    """Median seconds of one forward+backward (gradient w.r.t. input and weights)."""
    grad = torch.randn_like(x_BTD)
    times = []
    for i in range(warmup + iters):
        x = x_BTD.detach().requires_grad_()
        _sync(x.device)
        t0 = time.perf_counter()
        module(x).backward(grad)
        _sync(x.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        module.zero_grad(set_to_none=True)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--preset", default=None, help="take dim/experts from a preset (default: a CPU-sized layer)"
    )
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="fp32 or bf16 (default bf16 on cuda, fp32 on cpu)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[
        a.dtype or ("bf16" if device.type == "cuda" else "fp32")
    ]
    if a.preset:
        args = get_preset(a.preset)
    else:  # V3's expert count and top-k at a width a 2-core CPU can time
        args = get_preset("medium").replace(dim=512, moe_inter_dim=128)
    args = args.replace(n_expert_groups=1, n_limited_groups=1)
    torch.manual_seed(0)
    active_F = (args.n_activated_experts + args.n_shared_experts) * args.moe_inter_dim
    dense = MLP(args.dim, active_F).to(device, dtype)
    x = torch.randn(1, a.tokens, args.dim, device=device, dtype=dtype)
    flops = 6 * a.tokens * 3 * args.dim * active_F
    print(
        f"# {device} {dtype}, N={a.tokens} tokens, D={args.dim}, E={args.n_routed_experts} top-{args.n_activated_experts}"
        f" + {args.n_shared_experts} shared, F={args.moe_inter_dim}; dense F={active_F}"
    )
    t_dense = time_fwd_bwd(dense, x, a.iters, a.warmup)
    print(f"dense SwiGLU      {t_dense * 1e3:9.2f} ms  {flops / t_dense / 1e12:7.3f} TFLOP/s  1.00x")
    modes = [("grouped", True), ("loop", False)]
    if not grouped_mm_supported(device, dtype):
        print(f"(torch._grouped_mm unsupported for {device.type}/{dtype}: 'grouped' falls back to the loop)")
    results = {}
    for name, grouped in modes:
        moe = MoE(args.replace(use_grouped_mm=grouped)).to(device, dtype).train()
        for prm in moe.parameters():
            torch.nn.init.normal_(prm, std=0.02)
        t = time_fwd_bwd(moe, x, a.iters, a.warmup)
        results[name] = t
        print(
            f"MoE ({name:7s})   {t * 1e3:9.2f} ms  {flops / t / 1e12:7.3f} TFLOP/s  {t / t_dense:5.2f}x dense"
        )
    print(f"loop / grouped    {results['loop'] / results['grouped']:.2f}x")


if __name__ == "__main__":
    main()
