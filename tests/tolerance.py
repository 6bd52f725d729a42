"""The one rule for comparing floating-point results in tests: the tolerance scales with what is compared.

Two computations of the same value that differ only in the order of their sums (another kernel, thread
count, SIMD width, BLAS core type, a batched or a per-row path) round differently. Reordering a sum of
`terms` numbers moves it by at most about terms·eps·Σ|x| (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., §4.2, the γ_n bound). So a comparison takes

* `rtol = SLACK · terms · eps(dtype)`, relative to each element, and
* `atol = rtol · max|expected|`: elements far below the largest one come out of cancellations whose
  rounding error is set by the large terms that cancelled, not by the small result.

`terms` is the reduction length behind the compared values (summed over the chained reductions for a
whole network: see `model_terms`). A fixed `atol=1e-6` instead is right on one CPU and wrong on the
next: gradients of magnitude 82 differ by 3.5e-6 (0.4 ulp of 82) between AVX-512 and AVX2 kernels.

A comparison that must be exact (a checkpoint round trip, a resume) uses `torch.equal`, never this.
"""

from __future__ import annotations

import math

import pytest
import torch

# Headroom over the bound. 1: γ_n is already the worst case (errors of exp/log/rsqrt add a few ulp, far
# below n ulp), and a real bug moves results by O(1) relative, far above it.
SLACK = 1.0


def eps(dtype: torch.dtype = torch.float32) -> float:
    return torch.finfo(dtype).eps


def tolerances(expected: torch.Tensor | float, terms: int, dtype: torch.dtype | None = None) -> dict[str, float]:
    """`rtol`/`atol` for `torch.testing.assert_close` (or `rel`/`abs` via `approx`) per the module rule."""
    if isinstance(expected, torch.Tensor):
        dtype = dtype or expected.dtype
        scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    else:
        dtype = dtype or torch.float32
        scale = abs(float(expected))
    rtol = SLACK * max(terms, 1) * eps(dtype)
    # `tiny` keeps an all-zero expected tensor from demanding bit equality.
    return {"rtol": rtol, "atol": rtol * max(scale, torch.finfo(dtype).tiny)}


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    terms: int,
    dtype: torch.dtype | None = None,
    msg: str | None = None,
) -> None:
    """`torch.testing.assert_close` with tolerances from `terms` and the magnitude of `expected`."""
    torch.testing.assert_close(actual, expected, **tolerances(expected, terms, dtype), msg=msg)


def approx(expected: float, *, terms: int, dtype: torch.dtype = torch.float32):
    """`pytest.approx` for a float computed in `dtype` (a loss logged by the trainer, a log-likelihood)."""
    tol = tolerances(expected, terms, dtype)
    return pytest.approx(expected, rel=tol["rtol"], abs=tol["atol"])


def model_terms(args, seq_len: int) -> int:
    """Reduction length along one forward pass of the model `args` describes: per layer the attention
    projections (dim, the LoRA ranks, head dims), the sequence sum and the FFN (dim, inter_dim), plus the
    output head. Used as `terms` when logits or losses of two paths are compared."""
    per_layer = (
        2 * args.dim
        + args.q_lora_rank
        + args.kv_lora_rank
        + args.qk_nope_head_dim
        + args.qk_rope_head_dim
        + args.n_heads * args.v_head_dim
        + seq_len
        + max(args.inter_dim, args.moe_inter_dim * (args.n_activated_experts + args.n_shared_experts))
    )
    return int(math.ceil((args.n_layers + getattr(args, "n_mtp_layers", 0)) * per_layer + args.dim))
