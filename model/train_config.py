"""Training configuration. A stdlib dataclass so the trainer runs where only torch is installed;
the project's pydantic config validates it (and rejects unknown keys) on the Prefect side."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class TrainArgs:
    __pydantic_config__ = {"extra": "forbid"}

    steps: int = 200
    seq_len: int = 128
    global_batch_size: int = 8  # sequences per optimizer step, across all ranks
    micro_batch_size: int = 4  # sequences per forward pass on one rank
    lr: float = 2.2e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio (report: 2.2e-4 → 2.2e-5)
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100
    keep_last: int = 3
    log_every: int = 10
    bias_update_speed: float = 0.001  # γ of the auxiliary-loss-free balancing
    seq_aux_alpha: float = 1e-4  # α of the sequence-wise balance loss
    mtp_lambda: float = 0.3  # λ of the MTP loss
    mask_document_boundaries: bool = False
    dtype: str = "auto"  # auto = bf16 autocast on GPU, fp32 on CPU
    compile: bool = False
    parallelism: str = "ddp"  # ddp | fsdp
    peak_tflops: float | None = None  # for MFU; default by device
    hang_timeout_s: float = 600.0  # the Prefect task kills a trainer that makes no step for this long
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainArgs:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"train: unknown key(s) {sorted(unknown)}")
        return cls(**d)
