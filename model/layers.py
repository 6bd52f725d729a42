"""Small building blocks: RMSNorm, interleaved RoPE with YaRN, the SwiGLU MLP.

Legend: B batch, T sequence (queries), H heads, R rope dims (qk_rope_head_dim), D model dim, F hidden
width of a feed-forward layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from crawl2score.model.config import ModelArgs


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich 2019) computed in fp32: bf16 sums of squares lose the small features."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * y.to(x.dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def _yarn_correction_range(args: ModelArgs, dim: int) -> tuple[float, float]:
    """Dims whose wavelength fits beta_fast..beta_slow rotations in the original context (YaRN §3.2)."""

    def correction_dim(n_rot: float) -> float:
        return dim * math.log(args.original_seq_len / (n_rot * 2 * math.pi)) / (2 * math.log(args.rope_theta))

    low = max(math.floor(correction_dim(args.beta_fast)), 0)
    high = min(math.ceil(correction_dim(args.beta_slow)), dim - 1)
    return low, high


def rope_cos_sin(args: ModelArgs, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [max_seq_len, R/2]; YaRN interpolation (Peng et al. 2023) when extended."""
    dim = args.qk_rope_head_dim
    freqs = 1.0 / (args.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim))
    if args.yarn_active:
        low, high = _yarn_correction_range(args, dim)
        high = high + 0.001 if low == high else high
        ramp = ((torch.arange(dim // 2, dtype=torch.float64, device=device) - low) / (high - low)).clamp(0, 1)
        # Low-frequency dims (ramp 1) are interpolated by the factor; high-frequency ones are kept.
        freqs = freqs / args.rope_factor * ramp + freqs * (1 - ramp)
    t = torch.arange(args.max_seq_len, dtype=torch.float64, device=device)
    angles = torch.outer(t, freqs)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (x0, x1), (x2, x3)... as DeepSeek's release does (interleaved layout).

    x: [B, T, H, R] (or [B, T, R] with H absent); cos/sin: [B, T, R/2] or [T, R/2].
    """
    x_f = x.float()
    x_even, x_odd = x_f[..., 0::2], x_f[..., 1::2]
    if x.dim() == 4:
        cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    out = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)
    return out.flatten(-2).to(x.dtype)


class MLP(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020): w2(silu(w1 x) * w3 x). Dense layers and shared experts."""

    def __init__(self, dim: int, inter_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, inter_dim, bias=False)
        self.w2 = nn.Linear(inter_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, inter_dim, bias=False)

    def forward(self, x_TD: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x_TD)) * self.w3(x_TD))
