"""Multi-head Latent Attention (DeepSeek-V2 §2.1, V3 §2.1.1) and its latent KV cache.

Training runs the "naive" form: keys and values are decompressed from the latent by wkv_b and fed to
`scaled_dot_product_attention` (fused kernels on GPU). Cached inference runs the absorbed form: wkv_b's
key half is folded into the query and its value half into the output, so the cache holds only the
normalised latent (kv_lora_rank) and the shared rope key (R) per token -- 576 values per layer for V3
against 2·128·128 for MHA with the same heads. Both forms compute the same function.

Legend: B batch, T queries, S keys, H heads, D model dim, C kv_lora_rank, Q q_lora_rank,
N qk_nope_head_dim, R qk_rope_head_dim, V v_head_dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crawl2score.model.config import ModelArgs
from crawl2score.model.layers import RMSNorm, apply_rope


class KVCache:
    """Per-layer latent cache for batched decoding (absorbed MLA).

    `valid_BS` marks real tokens (left padding is False and never attended); `pos_offset_B` is the
    number of left pads per row, subtracted from the cache index to give each row positions 0, 1, ...
    Layers are indexed 0..n_layers-1 for the trunk, then one slot per MTP module (for drafting).
    """

    def __init__(
        self,
        args: ModelArgs,
        batch: int,
        max_len: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        n_slots: int | None = None,
    ):
        n_slots = args.n_layers + args.n_mtp_layers if n_slots is None else n_slots
        self.max_len = max_len
        C = args.kv_lora_rank
        # One [B, S, C + R] buffer per slot: the attention scores are one matmul of the absorbed query
        # against it (no per-step concatenation of latent and rope key); kv_BSC / pe_BSR are views of it.
        self.kvpe_BSc = [
            torch.zeros(batch, max_len, C + args.qk_rope_head_dim, device=device, dtype=dtype) for _ in range(n_slots)
        ]
        self.kv_BSC = [buf[..., :C] for buf in self.kvpe_BSc]
        self.pe_BSR = [buf[..., C:] for buf in self.kvpe_BSc]
        self.valid_BS = torch.ones(batch, max_len, dtype=torch.bool, device=device)
        self.pos_offset_B = torch.zeros(batch, dtype=torch.long, device=device)

    def positions(self, start_pos: int, T: int) -> torch.Tensor:
        idx_T = torch.arange(start_pos, start_pos + T, device=self.valid_BS.device)
        return (idx_T[None, :] - self.pos_offset_B[:, None]).clamp_min(0)

    def mask(self, start_pos: int, T: int) -> torch.Tensor:
        """[B, 1, T, S] boolean: causal, real keys only; each query may always see itself (no empty rows).

        A single query (a decode step) is a real token: its slot is marked valid and the mask is a view of
        `valid_BS` (causality is implied: every key up to it precedes it), so a step allocates nothing
        that grows with the cache.
        """
        end = start_pos + T
        if T == 1:
            self.valid_BS[:, start_pos] = True
            return self.valid_BS[:, None, None, :end]
        q_idx = torch.arange(start_pos, end, device=self.valid_BS.device)[:, None]
        k_idx = torch.arange(end, device=self.valid_BS.device)[None, :]
        causal_TS = k_idx <= q_idx
        allowed = causal_TS[None] & self.valid_BS[:, None, :end]
        allowed = allowed | (k_idx == q_idx)[None]
        return allowed[:, None]


class MLA(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        H, N, R, V, C = (
            args.n_heads,
            args.qk_nope_head_dim,
            args.qk_rope_head_dim,
            args.v_head_dim,
            args.kv_lora_rank,
        )
        self.n_heads, self.nope, self.rope, self.v_dim, self.kv_rank = H, N, R, V, C
        if args.q_lora_rank == 0:
            self.wq = nn.Linear(args.dim, H * (N + R), bias=False)
        else:
            self.wq_a = nn.Linear(args.dim, args.q_lora_rank, bias=False)
            self.q_norm = RMSNorm(args.q_lora_rank, args.norm_eps)
            self.wq_b = nn.Linear(args.q_lora_rank, H * (N + R), bias=False)
        self.wkv_a = nn.Linear(args.dim, C + R, bias=False)
        self.kv_norm = RMSNorm(C, args.norm_eps)
        self.wkv_b = nn.Linear(C, H * (N + V), bias=False)
        self.wo = nn.Linear(H * V, args.dim, bias=False)
        self.scale = args.softmax_scale

    def _query(self, x_BTD: torch.Tensor) -> torch.Tensor:
        if self.args.q_lora_rank == 0:
            q = self.wq(x_BTD)
        else:
            q = self.wq_b(self.q_norm(self.wq_a(x_BTD)))
        B, T, _ = x_BTD.shape
        return q.view(B, T, self.n_heads, self.nope + self.rope)

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
        """mask: None (plain causal) or a boolean [B, 1, T, S] (True = attend). cos/sin at the rows' positions."""
        B, T, _ = x_BTD.shape
        q_BTHK = self._query(x_BTD)
        q_nope_BTHN, q_pe_BTHR = q_BTHK.split([self.nope, self.rope], dim=-1)
        q_pe_BTHR = apply_rope(q_pe_BTHR, cos_BTr, sin_BTr)
        kv_BTc = self.wkv_a(x_BTD)
        c_BTC, k_pe_BTR = kv_BTc.split([self.kv_rank, self.rope], dim=-1)
        k_pe_BTR = apply_rope(k_pe_BTR, cos_BTr, sin_BTr)
        c_BTC = self.kv_norm(c_BTC)
        if cache is None:
            return self._naive(q_nope_BTHN, q_pe_BTHR, c_BTC, k_pe_BTR, mask)
        end = start_pos + T
        kvpe_BSc = cache.kvpe_BSc[slot]
        kvpe_BSc[:, start_pos:end, : self.kv_rank] = c_BTC
        kvpe_BSc[:, start_pos:end, self.kv_rank :] = k_pe_BTR
        return self._absorbed(q_nope_BTHN, q_pe_BTHR, kvpe_BSc[:, :end], mask)

    def _naive(self, q_nope_BTHN, q_pe_BTHR, c_BTC, k_pe_BTR, mask) -> torch.Tensor:
        B, T, H, _ = q_nope_BTHN.shape
        kv_BTHk = self.wkv_b(c_BTC).view(B, T, H, self.nope + self.v_dim)
        k_nope_BTHN, v_BTHV = kv_BTHk.split([self.nope, self.v_dim], dim=-1)
        q_BHTK = torch.cat([q_nope_BTHN, q_pe_BTHR], dim=-1).transpose(1, 2)
        k_BHTK = torch.cat([k_nope_BTHN, k_pe_BTR[:, :, None, :].expand(B, T, H, self.rope)], dim=-1).transpose(1, 2)
        v_BHTV = v_BTHV.transpose(1, 2)
        if mask is None:
            o_BHTV = F.scaled_dot_product_attention(q_BHTK, k_BHTK, v_BHTV, is_causal=True, scale=self.scale)
        else:
            o_BHTV = F.scaled_dot_product_attention(q_BHTK, k_BHTK, v_BHTV, attn_mask=mask, scale=self.scale)
        return self.wo(o_BHTV.transpose(1, 2).reshape(B, T, H * self.v_dim))

    def _absorbed(self, q_nope_BTHN, q_pe_BTHR, kvpe_BSc, mask) -> torch.Tensor:
        """Attention in latent space: one shared "key/value head" of width C (+R for the key), like MQA.

        Written out rather than through SDPA: with one key head, `enable_gqa` (or an expand) costs a
        [B, H, S, C+R] copy of the cache per layer and step on CPU, where the scores here are one matmul of
        the [B, T·H, C+R] absorbed queries against the cache and the values a second against its latent
        half (a strided view, no copy). Softmax in fp32, as SDPA's math path.
        """
        B, T, H, _ = q_nope_BTHN.shape
        C, S = self.kv_rank, kvpe_BSc.shape[1]
        wkv_b_HkC = self.wkv_b.weight.view(H, self.nope + self.v_dim, self.kv_rank)
        q_lat_BTHC = torch.einsum("bthn,hnc->bthc", q_nope_BTHN, wkv_b_HkC[:, : self.nope])
        q_BMk = torch.cat([q_lat_BTHC, q_pe_BTHR], dim=-1).view(B, T * H, C + self.rope) * self.scale
        scores_BTHS = torch.matmul(q_BMk, kvpe_BSc.transpose(1, 2)).view(B, T, H, S)
        if mask is not None:
            scores_BTHS = torch.where(mask.transpose(1, 2), scores_BTHS, float("-inf"))
        elif T > 1:
            raise ValueError("cached attention over several queries needs an explicit mask")
        p_BMS = torch.softmax(scores_BTHS.float(), dim=-1).to(q_BMk.dtype).view(B, T * H, S)
        o_BTHC = torch.matmul(p_BMS, kvpe_BSc[..., :C]).view(B, T, H, C)
        o_BTHV = torch.einsum("bthc,hvc->bthv", o_BTHC, wkv_b_HkC[:, self.nope :])
        return self.wo(o_BTHV.reshape(B, T, H * self.v_dim))
