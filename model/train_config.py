"""Training configuration. A stdlib dataclass so the trainer runs where only torch is installed;
the project's pydantic config validates it (and rejects unknown keys) on the Prefect side.

Defaults follow DeepSeek-V3 §4.2 where the report gives a value (AdamW 0.9/0.95, wd 0.1, clip 1.0,
peak LR 2.2e-4 decaying to 2.2e-5 then 7.3e-6, γ = 0.001, α = 1e-4, λ = 0.3 then 0.1); every phase
boundary is written in the report's tokens and scaled to the run's token budget (`model/schedule.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from crawl2score.errors import BadInput

# Keys that change how a run is observed or stored, not what it computes: a checkpoint written under
# other values of these still resumes (see `TrainArgs.fingerprint_dict`).
VOLATILE_KEYS = frozenset(
    {
        "checkpoint_every",
        "keep_last",
        "log_every",
        "compile",
        "peak_tflops",
        "hang_timeout_s",
        "tokens_dir",
        "extra",
        "expert_parallel",  # checkpoints hold the whole model: any EP size resumes them
        # How a step is cut up, not what it computes: the same global batch, token-weighted loss and update
        # up to rounding. A run that ran out of memory resumes with a smaller micro-batch or loss chunk.
        "micro_batch_size",
        "loss_chunk",
    }
)


@dataclass
class TrainArgs:
    __pydantic_config__ = {"extra": "forbid"}

    steps: int = 200  # optimizer steps of the whole run; its token budget follows (model.schedule)
    seq_len: int = 128
    global_batch_size: int = 8  # sequences per optimizer step, across all ranks (after the ramp)
    micro_batch_size: int = 4  # sequences per forward pass on one rank
    # Every phase boundary below is in the report's tokens (V3 §4.2, a 14.8T-token run), scaled by
    # run_tokens / ref_tokens, run_tokens being what this run's `steps` consume (`Schedule.run_tokens`).
    ref_tokens: float = 14.8e12
    # Batch-size ramp, counted in tokens: V3 grows 3,072 → 15,360 sequences over the first 469B tokens.
    # 0 = off; otherwise the global batch grows linearly in tokens from this size to global_batch_size.
    batch_ramp_start: int = 0
    batch_ramp_tokens: float = 469e9
    # Learning rate (V3 §4.2): linear warm-up over 2,000 steps, 2.2e-4 until 10T tokens, cosine to 2.2e-5
    # until 14.3T, 2.2e-5 for 333B tokens, then 7.3e-6 for the last 167B.
    lr: float = 2.2e-4
    warmup_steps: int | None = None  # None: V3's 2,000 of its ~243k steps, scaled to `steps` (at least 1)
    lr_decay_start_tokens: float = 10.0e12
    lr_decay_end_tokens: float = 14.3e12
    min_lr_ratio: float = 0.1  # 2.2e-5 / 2.2e-4
    lr_final_start_tokens: float = 14.633e12
    final_lr_ratio: float = 7.3e-6 / 2.2e-4
    weight_decay: float = 0.1  # matrices only; norms and biases are not decayed
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100
    keep_last: int = 3
    log_every: int = 10
    # Balancing (V3 §2.1.2, §4.2): γ for the first 14.3T tokens (then 0), α of the sequence-wise loss,
    # MTP weight λ = 0.3 for the first 10T tokens, then 0.1.
    bias_update_speed: float = 0.001
    bias_update_stop_tokens: float = 14.3e12
    seq_aux_alpha: float = 1e-4
    mtp_lambda: float = 0.3
    mtp_lambda_late: float = 0.1
    mtp_lambda_switch_tokens: float = 10.0e12
    loss_chunk: int = 2048  # tokens per chunk of the output-head cross entropy (bounds logits memory)
    mask_document_boundaries: bool = False
    dtype: str = "auto"  # auto = bf16 autocast on GPU, fp32 on CPU; or "bf16" / "fp32"
    device: str = "auto"  # auto = cuda:LOCAL_RANK when available, else cpu
    compile: bool = False
    parallelism: str = "ddp"  # ddp | fsdp (only used with more than one rank)
    # Ranks the routed experts are sharded over (expert parallelism, model/expert_parallel.py): blocks of
    # this many consecutive ranks; 1 = every rank holds every expert. Composes with ddp and fsdp.
    expert_parallel: int = 1
    peak_tflops: float | None = None  # for MFU; default by device (see model.train.default_peak_tflops)
    hang_timeout_s: float = 600.0  # the Prefect task kills a trainer that prints nothing for this long
    tokens_dir: str | None = None  # default WORKDIR/tokens
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise BadInput("train.steps must be >= 1")
        if self.micro_batch_size < 1 or self.global_batch_size < 1:
            raise BadInput("train batch sizes must be >= 1")
        if self.parallelism not in ("ddp", "fsdp"):
            raise BadInput(f"train.parallelism must be 'ddp' or 'fsdp', got {self.parallelism!r}")
        if self.expert_parallel < 1:
            raise BadInput("train.expert_parallel must be >= 1")
        if self.dtype not in ("auto", "bf16", "fp32"):
            raise BadInput(f"train.dtype must be auto, bf16 or fp32, got {self.dtype!r}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise BadInput("train.warmup_steps must be >= 0")
        if not 0.0 <= self.lr_decay_start_tokens <= self.lr_decay_end_tokens <= self.lr_final_start_tokens:
            raise BadInput("need 0 <= train.lr_decay_start_tokens <= lr_decay_end_tokens <= lr_final_start_tokens")
        if self.ref_tokens <= 0 or self.batch_ramp_tokens < 0:
            raise BadInput("train.ref_tokens must be > 0 and train.batch_ramp_tokens >= 0")
        if self.batch_ramp_start > self.global_batch_size:
            raise BadInput("train.batch_ramp_start must not exceed train.global_batch_size")

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
            raise BadInput(f"train: unknown key(s) {sorted(unknown)}")
        return cls(**d)
