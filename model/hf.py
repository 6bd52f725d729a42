"""Hugging Face interop: our checkpoints ↔ transformers' DeepseekV3ForCausalLM layout.

The key map is explicit (one function each way) so a reader can audit it. On disk the routed experts are
stored per expert (`mlp.experts.{i}.{gate,up,down}_proj.weight`), as DeepSeek's release and as
transformers 5 expects from files (it fuses them on load); MTP module k goes to `model.layers.{L+k-1}.*`
with `enorm, hnorm, eh_proj, shared_head.norm` and copies of `embed_tokens` / `shared_head.head`, as in
DeepSeek's release. transformers itself is imported only by the tests; this module needs safetensors.

transformers' router is always sigmoid with normalised top-k weights, so softmax-routed models
(V2-Lite shapes) are refused on export rather than silently changed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from crawl2score.model.checkpoint import load_checkpoint, model_state_dict, save_model, save_tensors
from crawl2score.model.config import ModelArgs
from crawl2score.model.model import Transformer

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# Per-block names: ours → transformers' (relative to `layers.N.` / `model.layers.N.`).
_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn.wq.weight": "self_attn.q_proj.weight",
    "attn.wq_a.weight": "self_attn.q_a_proj.weight",
    "attn.q_norm.weight": "self_attn.q_a_layernorm.weight",
    "attn.wq_b.weight": "self_attn.q_b_proj.weight",
    "attn.wkv_a.weight": "self_attn.kv_a_proj_with_mqa.weight",
    "attn.kv_norm.weight": "self_attn.kv_a_layernorm.weight",
    "attn.wkv_b.weight": "self_attn.kv_b_proj.weight",
    "attn.wo.weight": "self_attn.o_proj.weight",
    "ffn.w1.weight": "mlp.gate_proj.weight",
    "ffn.w2.weight": "mlp.down_proj.weight",
    "ffn.w3.weight": "mlp.up_proj.weight",
    "ffn.gate.weight": "mlp.gate.weight",
    "ffn.gate.expert_bias": "mlp.gate.e_score_correction_bias",
    "ffn.shared.w1.weight": "mlp.shared_experts.gate_proj.weight",
    "ffn.shared.w2.weight": "mlp.shared_experts.down_proj.weight",
    "ffn.shared.w3.weight": "mlp.shared_experts.up_proj.weight",
}
_EXPERT = {"w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}
_MTP = {
    "enorm.weight": "enorm.weight",
    "hnorm.weight": "hnorm.weight",
    "eh_proj.weight": "eh_proj.weight",
    "norm.weight": "shared_head.norm.weight",
}


def hf_config(args: ModelArgs) -> dict:
    if args.score_func != "sigmoid" or not args.norm_topk_prob:
        raise ValueError(
            "transformers' DeepseekV3 router is sigmoid with normalised top-k weights; this model "
            f"uses score_func={args.score_func!r}, norm_topk_prob={args.norm_topk_prob}: not exportable"
        )
    rope: dict = {"rope_type": "default", "rope_theta": args.rope_theta}
    if args.yarn_active:
        rope = {
            "rope_type": "yarn",
            "rope_theta": args.rope_theta,
            "factor": args.rope_factor,
            "original_max_position_embeddings": args.original_seq_len,
            "beta_fast": args.beta_fast,
            "beta_slow": args.beta_slow,
            "mscale": args.mscale,
            "mscale_all_dim": args.mscale,
        }
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "vocab_size": args.vocab_size,
        "hidden_size": args.dim,
        "intermediate_size": args.inter_dim,
        "moe_intermediate_size": args.moe_inter_dim,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.n_heads,
        "n_shared_experts": args.n_shared_experts,
        "n_routed_experts": args.n_routed_experts,
        "num_experts_per_tok": args.n_activated_experts,
        "routed_scaling_factor": args.route_scale,
        "n_group": args.n_expert_groups,
        "topk_group": args.n_limited_groups,
        "first_k_dense_replace": args.n_dense_layers,
        "norm_topk_prob": True,
        "q_lora_rank": args.q_lora_rank or None,
        "kv_lora_rank": args.kv_lora_rank,
        "qk_nope_head_dim": args.qk_nope_head_dim,
        "qk_rope_head_dim": args.qk_rope_head_dim,
        "v_head_dim": args.v_head_dim,
        "rope_interleave": True,
        "rope_parameters": rope,
        "max_position_embeddings": args.max_seq_len,
        "rms_norm_eps": args.norm_eps,
        "initializer_range": args.init_std,
        "hidden_act": "silu",
        "attention_bias": False,
        "tie_word_embeddings": False,
        "num_nextn_predict_layers": args.n_mtp_layers,
        "dtype": "float32",
    }


def args_from_hf_config(cfg: dict, n_mtp_layers: int) -> ModelArgs:
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    kw = {}
    if rope.get("rope_type", rope.get("type", "default")) == "yarn":
        kw = {
            "rope_factor": rope["factor"],
            "original_seq_len": rope["original_max_position_embeddings"],
            "beta_fast": rope.get("beta_fast", 32),
            "beta_slow": rope.get("beta_slow", 1),
            "mscale": rope.get("mscale_all_dim", rope.get("mscale", 1.0)),
        }
    n_group = cfg.get("n_group") or 1
    return ModelArgs(
        vocab_size=cfg["vocab_size"],
        dim=cfg["hidden_size"],
        n_layers=cfg["num_hidden_layers"],
        n_dense_layers=cfg.get("first_k_dense_replace") or 0,
        n_heads=cfg["num_attention_heads"],
        inter_dim=cfg["intermediate_size"],
        moe_inter_dim=cfg["moe_intermediate_size"],
        n_routed_experts=cfg["n_routed_experts"],
        n_shared_experts=cfg.get("n_shared_experts") or 0,
        n_activated_experts=cfg["num_experts_per_tok"],
        n_expert_groups=n_group,
        n_limited_groups=cfg.get("topk_group") or 1,
        score_func="sigmoid",
        route_scale=cfg.get("routed_scaling_factor", 1.0),
        norm_topk_prob=cfg.get("norm_topk_prob", True),
        q_lora_rank=cfg.get("q_lora_rank") or 0,
        kv_lora_rank=cfg["kv_lora_rank"],
        qk_nope_head_dim=cfg["qk_nope_head_dim"],
        qk_rope_head_dim=cfg["qk_rope_head_dim"],
        v_head_dim=cfg["v_head_dim"],
        rope_theta=theta,
        max_seq_len=cfg.get("max_position_embeddings", 4096),
        n_mtp_layers=n_mtp_layers,
        norm_eps=cfg.get("rms_norm_eps", 1e-6),
        init_std=cfg.get("initializer_range", 0.006),
        **kw,
    )


def to_hf_state_dict(state: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": state["embed.weight"],
        "model.norm.weight": state["norm.weight"],
        "lm_head.weight": state["head.weight"],
    }

    def block(prefix_ours: str, prefix_hf: str) -> None:
        for ours, theirs in _BLOCK.items():
            if prefix_ours + ours in state:
                out[prefix_hf + theirs] = state[prefix_ours + ours]
        for w, name in _EXPERT.items():
            key = f"{prefix_ours}ffn.experts.{w}"
            if key in state:
                for e, t in enumerate(state[key].unbind(0)):
                    out[f"{prefix_hf}mlp.experts.{e}.{name}.weight"] = t.clone()

    for i in range(args.n_layers):
        block(f"layers.{i}.", f"model.layers.{i}.")
    for k in range(args.n_mtp_layers):
        L = args.n_layers + k
        block(f"mtp.{k}.block.", f"model.layers.{L}.")
        for ours, theirs in _MTP.items():
            out[f"model.layers.{L}.{theirs}"] = state[f"mtp.{k}.{ours}"]
        out[f"model.layers.{L}.embed_tokens.weight"] = state["embed.weight"].clone()
        out[f"model.layers.{L}.shared_head.head.weight"] = state["head.weight"].clone()
    return {k: v.contiguous() for k, v in out.items()}


def from_hf_state_dict(hf: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    state = {
        "embed.weight": hf["model.embed_tokens.weight"],
        "norm.weight": hf["model.norm.weight"],
        "head.weight": hf["lm_head.weight"],
    }

    def block(prefix_ours: str, prefix_hf: str) -> None:
        for ours, theirs in _BLOCK.items():
            if prefix_hf + theirs in hf:
                state[prefix_ours + ours] = hf[prefix_hf + theirs]
        if prefix_hf + "mlp.experts.gate_up_proj" in hf:  # fused in-memory layout [E, 2F, D], gate first
            gate, up = hf[prefix_hf + "mlp.experts.gate_up_proj"].chunk(2, dim=1)
            state[prefix_ours + "ffn.experts.w1"], state[prefix_ours + "ffn.experts.w3"] = gate, up
            state[prefix_ours + "ffn.experts.w2"] = hf[prefix_hf + "mlp.experts.down_proj"]
        elif prefix_hf + "mlp.experts.0.gate_proj.weight" in hf:
            for w, name in _EXPERT.items():
                state[f"{prefix_ours}ffn.experts.{w}"] = torch.stack(
                    [hf[f"{prefix_hf}mlp.experts.{e}.{name}.weight"] for e in range(args.n_routed_experts)]
                )

    for i in range(args.n_layers):
        block(f"layers.{i}.", f"model.layers.{i}.")
    for k in range(args.n_mtp_layers):
        L = args.n_layers + k
        block(f"mtp.{k}.block.", f"model.layers.{L}.")
        for ours, theirs in _MTP.items():
            state[f"mtp.{k}.{ours}"] = hf[f"model.layers.{L}.{theirs}"]
    return {k: v.contiguous() for k, v in state.items()}


def export_hf(
    checkpoint_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    tokenizer_dir: str | os.PathLike | None = None,
) -> Path:
    """Write config.json, model.safetensors (transformers' names) and tokenizer files into out_dir."""
    model = load_checkpoint(checkpoint_dir)
    args = model.args
    cfg = hf_config(args)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = to_hf_state_dict(model_state_dict(model), args)
    save_tensors(tensors, out / "model.safetensors", metadata={"format": "pt"})
    if tokenizer_dir is not None:
        tok = Path(tokenizer_dir)
        for name in TOKENIZER_FILES:
            if (tok / name).exists():
                shutil.copy2(tok / name, out / name)
        cfg.update(_special_token_ids(tok))
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "generation_config.json").write_text(
        json.dumps({k: cfg[k] for k in ("bos_token_id", "eos_token_id") if k in cfg}, indent=2) + "\n"
    )
    return out


def _special_token_ids(tok: Path) -> dict:
    """bos/eos/pad ids from tokenizer files, so generate() in transformers stops where ours does."""
    try:
        tj = json.loads((tok / "tokenizer.json").read_text())
        tc = json.loads((tok / "tokenizer_config.json").read_text()) if (tok / "tokenizer_config.json").exists() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    ids = {t["content"]: t["id"] for t in tj.get("added_tokens", [])}
    out = {}
    for role in ("bos", "eos", "pad"):
        tok_str = tc.get(f"{role}_token")
        if isinstance(tok_str, dict):
            tok_str = tok_str.get("content")
        if tok_str in ids:
            out[f"{role}_token_id"] = ids[tok_str]
    return out


def _read_hf_tensors(hf_dir: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors in {hf_dir} (pickled .bin weights are not read)")
    for f in files:
        tensors.update(load_file(str(f)))
    return tensors


def import_hf(hf_dir: str | os.PathLike, checkpoint_dir: str | os.PathLike) -> Transformer:
    """Convert a DeepseekV3 folder (ours, DeepSeek's layout or transformers' save_pretrained) to a native
    checkpoint; returns the model (eval mode). MTP modules are imported when their weights are present."""
    hf_dir = Path(hf_dir)
    cfg = json.loads((hf_dir / "config.json").read_text())
    if cfg.get("model_type") != "deepseek_v3":
        raise ValueError(f"expected model_type deepseek_v3, got {cfg.get('model_type')!r}")
    hf = _read_hf_tensors(hf_dir)
    n_layers = cfg["num_hidden_layers"]
    present = {int(m.group(1)) for k in hf if (m := re.match(r"model\.layers\.(\d+)\.eh_proj\.weight", k))}
    n_mtp = sum(1 for k in range(cfg.get("num_nextn_predict_layers", 0) or 0) if n_layers + k in present)
    args = args_from_hf_config(cfg, n_mtp)
    with torch.device("meta"):
        model = Transformer(args)
    model.to_empty(device="cpu")
    state = from_hf_state_dict(hf, args)
    for m in model.modules():  # transformers' save_pretrained may omit an all-zero correction bias
        if hasattr(m, "expert_bias"):
            m.expert_bias.zero_()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("expert_bias")]
    if missing or unexpected:
        raise ValueError(f"HF import: missing {missing[:8]}, unexpected {unexpected[:8]}")
    model.reset_buffers()
    model.eval()
    save_model(model, checkpoint_dir)
    return model
