"""One pre-norm transformer block: MLA then a dense SwiGLU (first `n_dense_layers`) or DeepSeekMoE.

Legend: B batch, T sequence, D model dim, r half the rope dims.
"""

from __future__ import annotations

import torch
from torch import nn

from crawl2score.model.attention import MLA, KVCache
from crawl2score.model.config import ModelArgs
from crawl2score.model.layers import MLP, RMSNorm
from crawl2score.model.moe import MoE


class Block(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs, dense: bool | None = None):
        super().__init__()
        self.layer_id = layer_id
        dense = layer_id < args.n_dense_layers if dense is None else dense
        self.attn_norm = RMSNorm(args.dim, args.norm_eps)
        self.attn = MLA(args)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn: nn.Module = MLP(args.dim, args.inter_dim) if dense else MoE(args)

    def forward(
        self,
        x_BTD: torch.Tensor,
        cos_BTr: torch.Tensor,
        sin_BTr: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        slot: int = 0,
        start_pos: int = 0,
    ) -> torch.Tensor:
        x_BTD = x_BTD + self.attn(self.attn_norm(x_BTD), cos_BTr, sin_BTr, mask, cache, slot, start_pos)
        return x_BTD + self.ffn(self.ffn_norm(x_BTD))
