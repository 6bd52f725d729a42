"""Architecture hyper-parameters of the DeepSeek-V3 family (arXiv 2412.19437).

`ModelArgs` is a plain stdlib dataclass so `model/` stays importable on a bare GPU worker; the project's
pydantic `Config` validates it through `__pydantic_config__` (unknown keys are rejected). The defaults are
the `tiny` preset (CPU tests run in seconds); named presets live in `model/presets.py`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from crawl2score.errors import BadInput


@dataclass
class ModelArgs:
    # pydantic reads this class attribute when it validates the dataclass: unknown keys are errors.
    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    # Vocabulary of the project's byte-level BPE tokenizer (DeepSeek LLM / V2 size).
    vocab_size: int = 102400
    dim: int = 64
    n_layers: int = 3
    # The first layers keep a dense FFN: early layers route poorly and balance badly (DeepSeekMoE §4).
    n_dense_layers: int = 1
    n_heads: int = 4
    inter_dim: int = 192  # dense SwiGLU width
    moe_inter_dim: int = 32  # width of one fine-grained expert
    n_routed_experts: int = 8
    n_shared_experts: int = 1
    n_activated_experts: int = 2
    # Group-limited routing bounds how many nodes a token is sent to (V3 §2.1.2); 4 groups, keep 2 here
    # so the tiny model exercises the code path.
    n_expert_groups: int = 4
    n_limited_groups: int = 2
    score_func: Literal["sigmoid", "softmax"] = "sigmoid"  # V3: sigmoid; V2/V2-Lite: softmax
    route_scale: float = 2.5  # V3 value; multiplies the normalised gate weights
    # Normalise the selected gate weights to sum to 1 (V3 with sigmoid; V2-Lite does not).
    norm_topk_prob: bool = True
    # MLA (V2 §2.1): 0 means a full-rank query projection (V2-Lite).
    q_lora_rank: int = 32
    kv_lora_rank: int = 32
    qk_nope_head_dim: int = 16
    qk_rope_head_dim: int = 8
    v_head_dim: int = 16
    rope_theta: float = 10000.0
    max_seq_len: int = 256
    # YaRN context extension (used only when max_seq_len > original_seq_len, as in V3's 32K/128K stages).
    original_seq_len: int = 4096
    rope_factor: float = 40.0
    beta_fast: int = 32
    beta_slow: int = 1
    mscale: float = 1.0
    # Multi-token prediction depth D (V3 uses 1); 0 drops the modules.
    n_mtp_layers: int = 1
    norm_eps: float = 1e-6
    init_std: float = 0.006  # V3 §4.2: every weight drawn from N(0, 0.006)
    # Routed experts through torch._grouped_mm when the device/dtype supports it; exact loop otherwise.
    use_grouped_mm: bool = True

    def __post_init__(self) -> None:
        if self.score_func not in ("sigmoid", "softmax"):
            raise BadInput(f"score_func must be 'sigmoid' or 'softmax', got {self.score_func!r}")
        if self.n_routed_experts % max(self.n_expert_groups, 1):
            raise BadInput("n_routed_experts must be divisible by n_expert_groups")
        if not 1 <= self.n_limited_groups <= self.n_expert_groups:
            raise BadInput("need 1 <= n_limited_groups <= n_expert_groups")
        if self.n_activated_experts > self.n_routed_experts:
            raise BadInput("n_activated_experts exceeds n_routed_experts")
        per_group = self.n_routed_experts // self.n_expert_groups
        if self.n_expert_groups > 1 and per_group < 2:
            raise BadInput("group-limited routing scores a group by its top-2 experts: need >= 2 per group")
        if self.n_expert_groups > 1 and self.n_limited_groups * per_group < self.n_activated_experts:
            raise BadInput("kept groups hold fewer experts than n_activated_experts")
        if self.qk_rope_head_dim % 2:
            raise BadInput("qk_rope_head_dim must be even (RoPE rotates pairs)")
        if not 0 <= self.n_dense_layers <= self.n_layers:
            raise BadInput("n_dense_layers must be within [0, n_layers]")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def yarn_active(self) -> bool:
        return self.max_seq_len > self.original_seq_len and self.rope_factor > 1.0

    @property
    def softmax_scale(self) -> float:
        """(d_nope + d_rope)^-0.5, times mscale² once YaRN extends the context (DeepSeek's release)."""
        scale = self.qk_head_dim**-0.5
        if self.yarn_active:
            m = 0.1 * self.mscale * math.log(self.rope_factor) + 1.0
            scale *= m * m
        return scale

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelArgs:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise BadInput(f"unknown ModelArgs keys: {unknown}")
        return cls(**d)

    def replace(self, **overrides: Any) -> ModelArgs:
        return dataclasses.replace(self, **overrides)
