"""Named model shapes: one function per preset in one registry (torchtitan's habit).

`tiny` runs the tests on CPU in seconds; `small` fits one GPU (~200M total); `medium` is the H200
benchmark (~2B total, V3's routing at a twelfth of its depth); `deepseek-v2-lite` and `deepseek-v3` are
the released shapes (configs in deepseek-ai's repositories), used for parameter counts and interop.
"""

from __future__ import annotations

from collections.abc import Callable

from crawl2score.model.config import ModelArgs

PRESETS: dict[str, Callable[[], ModelArgs]] = {}


def register(name: str) -> Callable[[Callable[[], ModelArgs]], Callable[[], ModelArgs]]:
    def wrap(fn: Callable[[], ModelArgs]) -> Callable[[], ModelArgs]:
        PRESETS[name] = fn
        return fn

    return wrap


def get_preset(name: str) -> ModelArgs:
    try:
        return PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}") from None


@register("tiny")
def tiny() -> ModelArgs:
    return ModelArgs()


@register("small")
def small() -> ModelArgs:
    # One group (no node limit on one GPU); 32 fine-grained experts top-4 + 2 shared.
    return ModelArgs(
        dim=512,
        n_layers=8,
        n_dense_layers=1,
        n_heads=8,
        inter_dim=1536,
        moe_inter_dim=256,
        n_routed_experts=32,
        n_shared_experts=2,
        n_activated_experts=4,
        n_expert_groups=1,
        n_limited_groups=1,
        q_lora_rank=0,
        kv_lora_rank=128,
        qk_nope_head_dim=64,
        qk_rope_head_dim=32,
        v_head_dim=64,
        max_seq_len=4096,
        n_mtp_layers=1,
    )


@register("medium")
def medium() -> ModelArgs:
    # V3's per-layer recipe (sigmoid router, 2 shared + top-6 of 64, MLA with 512 latent, MTP 1) at
    # dim 1536 and 12 layers: ~2.3B total, ~0.5B activated. One group: a single GPU has no node limit.
    return ModelArgs(
        dim=1536,
        n_layers=12,
        n_dense_layers=1,
        n_heads=12,
        inter_dim=4096,
        moe_inter_dim=512,
        n_routed_experts=64,
        n_shared_experts=2,
        n_activated_experts=6,
        n_expert_groups=1,
        n_limited_groups=1,
        q_lora_rank=768,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        max_seq_len=4096,
        n_mtp_layers=1,
    )


@register("deepseek-v2-lite")
def deepseek_v2_lite() -> ModelArgs:
    # deepseek-ai/DeepSeek-V2-Lite config.json (pretraining context 4K; the release extends with YaRN).
    return ModelArgs(
        vocab_size=102400,
        dim=2048,
        n_layers=27,
        n_dense_layers=1,
        n_heads=16,
        inter_dim=10944,
        moe_inter_dim=1408,
        n_routed_experts=64,
        n_shared_experts=2,
        n_activated_experts=6,
        n_expert_groups=1,
        n_limited_groups=1,
        score_func="softmax",
        route_scale=1.0,
        norm_topk_prob=False,
        q_lora_rank=0,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        max_seq_len=4096,
        n_mtp_layers=0,
    )


@register("deepseek-v3")
def deepseek_v3() -> ModelArgs:
    # deepseek-ai/DeepSeek-V3 inference/configs/config_671B.json, 4K pretraining context.
    return ModelArgs(
        vocab_size=129280,
        dim=7168,
        n_layers=61,
        n_dense_layers=3,
        n_heads=128,
        inter_dim=18432,
        moe_inter_dim=2048,
        n_routed_experts=256,
        n_shared_experts=1,
        n_activated_experts=8,
        n_expert_groups=8,
        n_limited_groups=4,
        score_func="sigmoid",
        route_scale=2.5,
        q_lora_rank=1536,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        max_seq_len=4096,
        original_seq_len=4096,
        rope_factor=40.0,
        mscale=1.0,
        n_mtp_layers=1,
    )
