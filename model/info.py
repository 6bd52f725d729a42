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
* `train_flops_per_token`: 6·N + 6·L·H·(d_qk + d_v)·S (torchtitan's formula: attention counted over the
  full S = max_seq_len, not halved for causality), N = activated matmul weights incl. routers, L and N
  including the MTP modules (they run every training step). `..._causal` halves the attention term.
* KV cache per token in bf16: MLA's latent + rope key per layer, against standard MHA with the same heads
  (2·H·d_v values per layer, the report's comparison).
"""

from __future__ import annotations

from typing import Any

import torch

from crawl2score.model.config import ModelArgs
from crawl2score.model.model import Transformer
from crawl2score.model.moe import MoE


def model_info(args: ModelArgs, bytes_per_value: int = 2) -> dict[str, Any]:
    with torch.device("meta"):
        model = Transformer(args)
    main = {n: p.numel() for n, p in model.named_parameters() if not n.startswith("mtp.")}
    mtp = {n: p.numel() for n, p in model.named_parameters() if n.startswith("mtp.")}
    per_expert = 3 * args.dim * args.moe_inter_dim
    idle_experts = args.n_routed_experts - args.n_activated_experts
    n_moe_main = sum(isinstance(b.ffn, MoE) for b in model.layers)
    n_moe_mtp = sum(isinstance(m.block.ffn, MoE) for m in model.mtp)
    router_main = sum(v for n, v in main.items() if n.endswith("gate.weight"))
    router_mtp = sum(v for n, v in mtp.items() if n.endswith("gate.weight"))
    embed = args.vocab_size * args.dim
    total = sum(main.values())
    mtp_total = sum(mtp.values())
    active_main = total - embed - n_moe_main * idle_experts * per_expert  # routers included
    active_mtp = mtp_total - n_moe_mtp * idle_experts * per_expert
    S = args.max_seq_len
    attn_flops_layer = 6 * args.n_heads * (args.qk_head_dim + args.v_head_dim) * S
    n_attn_layers = args.n_layers + args.n_mtp_layers
    flops = 6 * (active_main + active_mtp) + n_attn_layers * attn_flops_layer
    flops_causal = 6 * (active_main + active_mtp) + n_attn_layers * attn_flops_layer // 2
    latent = args.n_layers * (args.kv_lora_rank + args.qk_rope_head_dim) * bytes_per_value
    mha = args.n_layers * 2 * args.n_heads * args.v_head_dim * bytes_per_value
    return {
        "total_params": total,
        "mtp_params": mtp_total,
        "mtp_params_as_released": mtp_total + (2 * embed if args.n_mtp_layers else 0),
        "total_params_with_mtp": total + mtp_total,
        "activated_params": active_main - router_main,
        "activated_params_with_router": active_main,
        "activated_params_mtp": active_mtp - router_mtp,
        "embedding_params": embed,
        "train_flops_per_token": flops,
        "train_flops_per_token_causal": flops_causal,
        "train_flops_seq_len": S,
        "kv_cache_bytes_per_token": latent,
        "kv_cache_bytes_per_token_mha": mha,
        "kv_cache_ratio_mha_over_mla": mha / latent,
        "kv_bytes_per_value": bytes_per_value,
        "n_moe_layers": n_moe_main,
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
