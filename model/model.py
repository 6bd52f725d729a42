"""The DeepSeek-V3 transformer: embedding → blocks (MLA + dense/MoE) → final norm → head, plus MTP.

`forward(tokens)` gives main-head logits (inference, lm-eval); `loss(...)` is the training entry: chunked
cross entropy (the B·T·V logits never exist at once: each chunk's logits are recomputed in backward),
MTP loss (λ/D)·Σ_k CE_k and the sequence-wise balance loss of every MoE layer.

Legend: B batch, T sequence, D model dim, V vocabulary, N flattened tokens, r half the rope dims.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from crawl2score.model.attention import KVCache
from crawl2score.model.block import Block
from crawl2score.model.config import ModelArgs
from crawl2score.model.layers import RMSNorm, rope_cos_sin
from crawl2score.model.moe import MoE
from crawl2score.model.mtp import IGNORE, MTPModule, mtp_shift


@dataclass
class LossOutput:
    loss: torch.Tensor  # total, to backprop: ce + mtp_lambda·mtp + balance
    ce_loss: torch.Tensor  # main next-token cross entropy (detached)
    mtp_loss: torch.Tensor  # mean over MTP depths of their CE (detached; 0 without MTP)
    balance_loss: torch.Tensor  # α·Σ_layers sequence-wise balance loss (detached)
    n_tokens: int  # tokens with a label


def _ce_sum(h_ND: torch.Tensor, head_w: torch.Tensor, labels_N: torch.Tensor) -> torch.Tensor:
    logits_NV = F.linear(h_ND, head_w).float()
    return F.cross_entropy(logits_NV, labels_N, ignore_index=IGNORE, reduction="sum")


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.embed = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Block(i, args) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.head = nn.Linear(args.dim, args.vocab_size, bias=False)
        self.mtp = nn.ModuleList(MTPModule(args.n_layers + k, args) for k in range(args.n_mtp_layers))
        cos, sin = rope_cos_sin(args, device=self.embed.weight.device)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        if self.embed.weight.device.type != "meta":
            self.init_weights()

    # ---- initialisation -------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, std: float | None = None) -> None:
        """Every matrix N(0, std) (V3 §4.2: 0.006), norms 1, biases and counts 0; rebuilds rope tables."""
        std = self.args.init_std if std is None else std
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                nn.init.normal_(p, mean=0.0, std=std)
        self.reset_buffers()
        for m in self.modules():
            if isinstance(m, MoE):
                m.gate.expert_bias.zero_()

    @torch.no_grad()
    def reset_buffers(self) -> None:
        """Recompute non-persistent buffers (after `to_empty` from the meta device)."""
        cos, sin = rope_cos_sin(self.args, device=self.rope_cos.device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)
        for m in self.modules():
            if isinstance(m, MoE):
                m.tokens_per_expert.zero_()

    # ---- trunk ----------------------------------------------------------------------------------------
    def _rope_and_mask(
        self,
        B: int,
        T: int,
        start_pos: int,
        cache: KVCache | None,
        doc_ids_BT: torch.Tensor | None,
        pos_BT: torch.Tensor | None,
    ):
        device = self.rope_cos.device
        if cache is not None:
            pos_BT = cache.positions(start_pos, T) if pos_BT is None else pos_BT
            mask = cache.mask(start_pos, T)
        else:
            if pos_BT is None:
                pos_BT = torch.arange(start_pos, start_pos + T, device=device)[None].expand(B, T)
            mask = None
            if doc_ids_BT is not None:  # causal and same document
                causal_TT = torch.ones(T, T, dtype=torch.bool, device=device).tril()
                mask = (causal_TT[None] & (doc_ids_BT[:, :, None] == doc_ids_BT[:, None, :]))[:, None]
        return self.rope_cos[pos_BT], self.rope_sin[pos_BT], mask

    def hidden(
        self,
        tokens_BT: torch.Tensor,
        start_pos: int = 0,
        cache: KVCache | None = None,
        *,
        doc_ids_BT: torch.Tensor | None = None,
        pos_BT: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states after the final norm [B, T, D]: what the head and MTP module 1 read."""
        B, T = tokens_BT.shape
        cos, sin, mask = self._rope_and_mask(B, T, start_pos, cache, doc_ids_BT, pos_BT)
        h_BTD = self.embed(tokens_BT)
        for i, layer in enumerate(self.layers):
            h_BTD = layer(h_BTD, cos, sin, mask, cache, i, start_pos)
        return self.norm(h_BTD)

    def forward(
        self,
        tokens_BT: torch.Tensor,
        start_pos: int = 0,
        cache: KVCache | None = None,
        *,
        doc_ids_BT: torch.Tensor | None = None,
        pos_BT: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Main-head logits [B, T, V] in fp32. MTP modules are not run (they only train / draft)."""
        h_BTD = self.hidden(tokens_BT, start_pos, cache, doc_ids_BT=doc_ids_BT, pos_BT=pos_BT)
        return self.head(h_BTD).float()

    def mtp_draft(
        self,
        h_BTD: torch.Tensor,
        next_tokens_BT: torch.Tensor,
        depth: int = 1,
        start_pos: int = 0,
        cache: KVCache | None = None,
        *,
        doc_ids_BT: torch.Tensor | None = None,
        pos_BT: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run MTP module `depth` (1-based) for drafting: (logits [B, T, V] fp32, hidden for depth+1).

        h_BTD is the previous depth's hidden at positions i (from `hidden()` for depth 1, or the second
        output of the previous call); next_tokens_BT holds t_{i+depth}; the logits predict t_{i+depth+1}.
        With a cache, the module attends through slot n_layers + depth - 1 of the same KVCache.
        """
        B, T = next_tokens_BT.shape
        cos, sin, mask = self._rope_and_mask(B, T, start_pos, cache, doc_ids_BT, pos_BT)
        slot = self.args.n_layers + depth - 1
        out_BTD = self.mtp[depth - 1](h_BTD, self.embed(next_tokens_BT), cos, sin, mask, cache, slot, start_pos)
        return self.head(out_BTD).float(), out_BTD

    # ---- training -------------------------------------------------------------------------------------
    def _chunked_ce(self, h_BTD: torch.Tensor, labels_BT: torch.Tensor, chunk: int) -> tuple[torch.Tensor, int]:
        """Sum of CE over labelled tokens, `chunk` tokens at a time; logits recomputed in backward."""
        h_ND = h_BTD.reshape(-1, h_BTD.shape[-1])
        labels_N = labels_BT.reshape(-1)
        n_valid = int((labels_N != IGNORE).sum())
        total = h_ND.new_zeros((), dtype=torch.float32)
        for s in range(0, h_ND.shape[0], chunk):
            h_c, l_c = h_ND[s : s + chunk], labels_N[s : s + chunk]
            if torch.is_grad_enabled():
                total = total + checkpoint(_ce_sum, h_c, self.head.weight, l_c, use_reentrant=False)
            else:
                total = total + _ce_sum(h_c, self.head.weight, l_c)
        return total, n_valid

    def loss(
        self,
        tokens_BT: torch.Tensor,
        labels_BT: torch.Tensor,
        doc_ids_BT: torch.Tensor | None = None,
        seq_aux_alpha: float = 1e-4,
        mtp_lambda: float = 0.3,
        loss_chunk: int = 2048,
    ) -> LossOutput:
        """Training loss. labels_BT[i] is the token after tokens_BT[i] (-100: ignored); doc_ids_BT masks
        attention (and MTP shifts) across packed documents. λ and α default to V3's first-phase values."""
        B, T = tokens_BT.shape
        for m in self.modules():
            if isinstance(m, MoE):
                m.balance_loss = None
        h_BTD = self.hidden(tokens_BT, doc_ids_BT=doc_ids_BT)
        ce_sum, n_tok = self._chunked_ce(h_BTD, labels_BT, loss_chunk)
        ce = ce_sum / max(n_tok, 1)
        total = ce
        mtp = torch.zeros((), device=ce.device)
        if len(self.mtp) and mtp_lambda > 0:
            cos, sin, mask = self._rope_and_mask(B, T, 0, None, doc_ids_BT, None)
            h_prev = h_BTD
            for k, module in enumerate(self.mtp, start=1):
                inp_BT, lab_BT = mtp_shift(tokens_BT, labels_BT, k, doc_ids_BT)
                h_prev = module(h_prev, self.embed(inp_BT), cos, sin, mask)
                s, n = self._chunked_ce(h_prev, lab_BT, loss_chunk)
                mtp = mtp + s / max(n, 1)
            mtp = mtp / len(self.mtp)
            total = total + mtp_lambda * mtp
        balance = torch.zeros((), device=ce.device)
        if seq_aux_alpha > 0 and self.training:
            for m in self.modules():
                if isinstance(m, MoE) and m.balance_loss is not None:
                    balance = balance + m.balance_loss
                    m.balance_loss = None
            balance = seq_aux_alpha * balance
            total = total + balance
        return LossOutput(total, ce.detach(), mtp.detach(), balance.detach(), n_tok)
