"""Multi-Token Prediction modules (DeepSeek-V3 §2.2).

Module k (1-based) at position i combines the previous depth's hidden state h^{k-1}_i with the embedding
of token t_{i+k}: h'_i = M_k[RMSNorm(h^{k-1}_i); RMSNorm(Emb(t_{i+k}))] (embedding first, as in the
released weights), runs one transformer block and predicts t_{i+k+1} through the shared output head.
The embedding and head are the main model's (shared, not copied).

Which hidden state feeds module 1: the main model's output *after* the final norm (as Megatron-Core, and
as vLLM/SGLang feed DeepSeek's released MTP weights when drafting). This keeps our weights drop-in with
the release layout and with engines that use it for speculative decoding; the module's own `hnorm`
rescales it anyway. Module k > 1 receives module k-1's output after that module's head norm, the same
kind of tensor. Sequences keep their length T: inputs and labels are rolled left and positions that run
past the end (or across a packed-document boundary) get label -100.

Legend: B batch, T sequence, D model dim.
"""

from __future__ import annotations

import torch
from torch import nn

from crawl2score.model.block import Block
from crawl2score.model.config import ModelArgs
from crawl2score.model.layers import RMSNorm

IGNORE = -100


class MTPModule(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs):
        super().__init__()
        self.enorm = RMSNorm(args.dim, args.norm_eps)
        self.hnorm = RMSNorm(args.dim, args.norm_eps)
        self.eh_proj = nn.Linear(2 * args.dim, args.dim, bias=False)
        # V3's MTP block is a MoE block like the deep layers of the trunk.
        self.block = Block(layer_id, args, dense=args.n_dense_layers > layer_id)
        self.norm = RMSNorm(args.dim, args.norm_eps)  # "shared_head.norm" in the release

    def forward(
        self, h_BTD: torch.Tensor, emb_BTD: torch.Tensor, cos, sin, mask=None, cache=None, slot=0, start_pos=0
    ) -> torch.Tensor:
        """Returns this depth's hidden state after its head norm (feeds the head and module k+1)."""
        x_BTD = self.eh_proj(torch.cat([self.enorm(emb_BTD), self.hnorm(h_BTD)], dim=-1))
        return self.norm(self.block(x_BTD, cos, sin, mask, cache, slot, start_pos))


def mtp_shift(
    tokens_BT: torch.Tensor,
    labels_BT: torch.Tensor,
    k: int,
    doc_ids_BT: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of module k (1-based), given the main model's tokens and next-token labels.

    Input at i is t_{i+k} = tokens[i+k]; target is t_{i+k+1} = labels[i+k] (labels[j] is the token after
    j). Positions with i+k >= T, or whose token i+k lies in another document than i, get label -100
    (and input 0, never looked at through the loss).
    """
    B, T = tokens_BT.shape
    inp_BT = torch.zeros_like(tokens_BT)
    lab_BT = torch.full_like(labels_BT, IGNORE)
    if k < T:
        inp_BT[:, : T - k] = tokens_BT[:, k:]
        lab_BT[:, : T - k] = labels_BT[:, k:]
        if doc_ids_BT is not None:
            cross_BT = doc_ids_BT[:, k:] != doc_ids_BT[:, : T - k]
            lab_BT[:, : T - k] = lab_BT[:, : T - k].masked_fill(cross_BT, IGNORE)
    return inp_BT, lab_BT
