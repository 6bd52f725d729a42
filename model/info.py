"""Parameter, FLOP and KV-cache figures of a ModelArgs, counted on the meta device (no memory).

Conventions (stated because every report uses its own):
* `total_params`: the main model (embedding, blocks, final norm, head), without the MTP modules.
* `mtp_params`: the MTP modules' own weights (embedding and head are shared, so not counted);
  `mtp_params_as_released` adds the copies of embedding and head that DeepSeek's release stores in
  `model.layers.61` (its "671B + 14B").
* `activated_params`: what one token multiplies through -- attention, dense FFNs, shared experts, its K
  routed experts and the output head -- *excluding* the input embedding (a table lookup) and the router
  gates (they score all experts but belong to none). With this convention V3 gives 36.5B ("37B") and
  V2-Lite 2.45B ("2.4B"); counting the routers too gives 36.6B and 2.451B.
* `train_flops_per_token` (`train_flops_per_token()`, also the trainer's MFU): 6·N + 6·L·H·(d_qk + d_v)·S
  (torchtitan's formula: attention counted over the full S, max_seq_len here and the run's seq_len in
  the trainer, not halved for causality), N = activated matmul weights incl. routers, with the MTP
  modules (they run every training step) and the output head once per MTP depth too (each depth runs
  it); L includes the MTP blocks. `..._causal` halves the attention term.
* KV cache per token in bf16: MLA's latent + rope key per layer, against standard MHA with the same heads
  (2·H·d_v values per layer, the report's comparison).
"""

from __future__ import annotations

from typing import Any

import torch

from crawl2score.model.config import ModelArgs
from crawl2score.model.model import Transformer
from crawl2score.model.moe import MoE


def _count(args: ModelArgs) -> dict[str, int]:
    """Parameter figures of `args` on the meta device, shared by `model_info` and the FLOPs count."""
    with torch.device("meta"):
        model = Transformer(args)
    main = {n: p.numel() for n, p in model.named_parameters() if not n.startswith("mtp.")}
    mtp = {n: p.numel() for n, p in model.named_parameters() if n.startswith("mtp.")}
    idle = (args.n_routed_experts - args.n_activated_experts) * 3 * args.dim * args.moe_inter_dim
    embed = args.vocab_size * args.dim
    total, mtp_total = sum(main.values()), sum(mtp.values())
    n_moe_main = sum(isinstance(b.ffn, MoE) for b in model.layers)
    n_moe_mtp = sum(isinstance(m.block.ffn, MoE) for m in model.mtp)
    return {
        "total": total,
        "mtp_total": mtp_total,
        "embed": embed,
        "head": main["head.weight"],
        "active_main": total - embed - n_moe_main * idle,  # routers included
        "active_mtp": mtp_total - n_moe_mtp * idle,
        "router_main": sum(v for n, v in main.items() if n.endswith("gate.weight")),
        "router_mtp": sum(v for n, v in mtp.items() if n.endswith("gate.weight")),
        "n_moe_main": n_moe_main,
    }


def _flops(args: ModelArgs, c: dict[str, int], seq_len: int) -> tuple[float, float]:
    """(matmul FLOPs per token, attention FLOPs per token at full S) of one training step."""
    n = c["active_main"] + c["active_mtp"] + args.n_mtp_layers * c["head"]
    attn = (args.n_layers + args.n_mtp_layers) * 6 * args.n_heads * (args.qk_head_dim + args.v_head_dim) * seq_len
    return 6.0 * n, float(attn)


def train_flops_per_token(args: ModelArgs, seq_len: int | None = None) -> float:
    """Model FLOPs of one trained token (module docstring), at `seq_len` (default max_seq_len): the one
    count behind both `crawl2score model-info` and the trainer's TFLOP/s and MFU."""
    dense, attn = _flops(args, _count(args), seq_len or args.max_seq_len)
    return dense + attn


def train_active_params(args: ModelArgs) -> int:
    """N of `train_flops_per_token`: matmul weights one trained token passes through (head per depth)."""
    dense, _ = _flops(args, _count(args), 0)
    return round(dense / 6)


def model_info(args: ModelArgs, bytes_per_value: int = 2) -> dict[str, Any]:
    c = _count(args)
    S = args.max_seq_len
    dense, attn = _flops(args, c, S)
    latent = args.n_layers * (args.kv_lora_rank + args.qk_rope_head_dim) * bytes_per_value
    mha = args.n_layers * 2 * args.n_heads * args.v_head_dim * bytes_per_value
    return {
        "total_params": c["total"],
        "mtp_params": c["mtp_total"],
        "mtp_params_as_released": c["mtp_total"] + (2 * c["embed"] if args.n_mtp_layers else 0),
        "total_params_with_mtp": c["total"] + c["mtp_total"],
        "activated_params": c["active_main"] - c["router_main"],
        "activated_params_with_router": c["active_main"],
        "activated_params_mtp": c["active_mtp"] - c["router_mtp"],
        "embedding_params": c["embed"],
        "train_flops_per_token": dense + attn,
        "train_flops_per_token_causal": dense + attn / 2,
        "train_flops_seq_len": S,
        "kv_cache_bytes_per_token": latent,
        "kv_cache_bytes_per_token_mha": mha,
        "kv_cache_ratio_mha_over_mla": mha / latent,
        "kv_bytes_per_value": bytes_per_value,
        "n_moe_layers": c["n_moe_main"],
        "n_mtp_layers": args.n_mtp_layers,
    }


def format_info(name: str, info: dict[str, Any]) -> str:
    def b(n: float) -> str:
        return f"{n / 1e9:.3f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"

    return "\n".join(
        [
            f"model {name}",
            f"  total params           {b(info['total_params'])} (+ MTP {b(info['mtp_params'])}; "
            f"as released {b(info['mtp_params_as_released'])})",
            f"  activated per token    {b(info['activated_params'])} "
            f"(excl. input embedding and routers; {b(info['activated_params_with_router'])} with routers)",
            f"  train FLOPs per token  {info['train_flops_per_token'] / 1e9:.2f} GFLOP "
            f"(6N + full-S attention at S={info['train_flops_seq_len']}; causal {info['train_flops_per_token_causal'] / 1e9:.2f})",
            f"  KV cache per token     {info['kv_cache_bytes_per_token']:,} B latent vs "
            f"{info['kv_cache_bytes_per_token_mha']:,} B MHA ({info['kv_cache_ratio_mha_over_mla']:.1f}x)",
        ]
    )
