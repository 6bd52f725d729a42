"""Training configuration. A stdlib dataclass so the trainer runs where only torch is installed;
the project's pydantic config validates it (and rejects unknown keys) on the Prefect side.

Defaults follow DeepSeek-V3 §4.2 where the report gives a value (AdamW 0.9/0.95, wd 0.1, clip 1.0,
peak LR 2.2e-4 decaying to 2.2e-5, γ = 0.001, α = 1e-4, λ = 0.3 then 0.1); the schedule's phase lengths
are the report's token fractions of its 14.8T-token run, scaled to `steps`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Keys that change how a run is observed or stored, not what it computes: a checkpoint written under
# other values of these still resumes (see `TrainArgs.fingerprint_dict`).
VOLATILE_KEYS = frozenset(
    {"checkpoint_every", "keep_last", "log_every", "compile", "peak_tflops", "hang_timeout_s", "tokens_dir", "extra"}
)


@dataclass
class TrainArgs:
    __pydantic_config__ = {"extra": "forbid"}

    steps: int = 200  # optimizer steps of the whole run (the schedule scales to it)
    seq_len: int = 128
    global_batch_size: int = 8  # sequences per optimizer step, across all ranks
    micro_batch_size: int = 4  # sequences per forward pass on one rank
    # Batch-size ramp (V3: 3,072 → 15,360 sequences over the first 469B of 14.8T tokens, 3.2%).
    # 0 = off; otherwise the global batch grows linearly from this size to global_batch_size.
    batch_ramp_start: int = 0
    batch_ramp_frac: float = 0.032
    # Learning rate: linear warm-up, constant, cosine to lr·min_lr_ratio, final constant (V3 §4.2:
    # constant to 10T tokens = 67.6%, cosine over 4.3T to 96.6%, then 2.2e-5).
    lr: float = 2.2e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    decay_start_frac: float = 0.676
    decay_end_frac: float = 0.966
    weight_decay: float = 0.1  # matrices only; norms and biases are not decayed
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100
    keep_last: int = 3
    log_every: int = 10
    # Balancing (V3 §2.1.2, §4.2): γ until `bias_update_stop_frac` of the run (then 0; V3 stops for the
    # last 500B tokens = 96.6%), α of the sequence-wise loss, MTP weight λ (0.3, then 0.1 from 67.6%).
    bias_update_speed: float = 0.001
    bias_update_stop_frac: float = 0.966
    seq_aux_alpha: float = 1e-4
    mtp_lambda: float = 0.3
    mtp_lambda_late: float = 0.1
    mtp_lambda_switch_frac: float = 0.676
    loss_chunk: int = 2048  # tokens per chunk of the output-head cross entropy (bounds logits memory)
    mask_document_boundaries: bool = False
    dtype: str = "auto"  # auto = bf16 autocast on GPU, fp32 on CPU; or "bf16" / "fp32"
    device: str = "auto"  # auto = cuda:LOCAL_RANK when available, else cpu
    compile: bool = False
    parallelism: str = "ddp"  # ddp | fsdp (only used with more than one rank)
    peak_tflops: float | None = None  # for MFU; default by device (see model.train.default_peak_tflops)
    hang_timeout_s: float = 600.0  # the Prefect task kills a trainer that prints nothing for this long
    tokens_dir: str | None = None  # default WORKDIR/tokens
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("train.steps must be >= 1")
        if self.micro_batch_size < 1 or self.global_batch_size < 1:
            raise ValueError("train batch sizes must be >= 1")
        if self.parallelism not in ("ddp", "fsdp"):
            raise ValueError(f"train.parallelism must be 'ddp' or 'fsdp', got {self.parallelism!r}")
        if self.dtype not in ("auto", "bf16", "fp32"):
            raise ValueError(f"train.dtype must be auto, bf16 or fp32, got {self.dtype!r}")
        if not 0.0 <= self.decay_start_frac <= self.decay_end_frac <= 1.0:
            raise ValueError("need 0 <= train.decay_start_frac <= train.decay_end_frac <= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint_dict(self) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed by this config."""
        return {k: v for k, v in asdict(self).items() if k not in VOLATILE_KEYS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainArgs:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"train: unknown key(s) {sorted(unknown)}")
        return cls(**d)
