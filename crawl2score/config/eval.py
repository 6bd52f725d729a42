"""Configuration of the evaluation stage (lm-eval on AIME 2024, MATH-500, CNMO 2024, and bits per byte)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Math benchmarks by short name (aime24, aime25, math500, cnmo24); lm-eval runs c2s_<name>_<protocol>.
    # ("tasks" is kept for Prefect tasks.)
    benchmarks: list[str] = Field(
        default_factory=lambda: ["aime24", "math500", "cnmo24"],
        description="math benchmarks: aime24, aime25, math500, cnmo24",
    )
    # Bits per byte (lm-eval rolling log-likelihood): the tokenizer stage's held-out text per language
    # (heldout_en, heldout_zh) and a fixed public text (public); any model, any tokenizer, same bytes.
    bpb: list[Literal["heldout_en", "heldout_zh", "public"]] = Field(
        default_factory=lambda: ["heldout_en", "heldout_zh", "public"], description="bits-per-byte texts (eval/bpb.py)"
    )
    bpb_max_bytes: int = Field(200_000, ge=1, description="bytes of each BPB text scored (its first documents)")
    # chat: zero-shot, sampled (report §5.3); base: 4-shot Minerva prompt, greedy (our models are base models).
    protocol: Literal["chat", "base"] = "base"
    benchmarks_dir: str | None = Field(
        None, description="local JSONL benchmarks; default $CRAWL2SCORE_BENCHMARKS_DIR, then ../shared/data/benchmarks"
    )
    limit: int | None = Field(None, ge=1, description="problems per benchmark (the first N)")
    max_new_tokens: int = Field(8192, ge=1, description="cap on new tokens (the report: 8,192)")
    num_samples: int = Field(16, ge=1, description="samples per problem for the sampled chat benchmarks")
    temperature: float = Field(0.7, ge=0.0, description="chat sampling temperature (report: 0.7)")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="chat nucleus top-p (DeepSeek-R1's 0.95; V3 gives none)")
    batch_size: int = Field(8, ge=1)
    seed: int = Field(1234, description="lm-eval's seeds and the per-sample sampling seeds")
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(None, description="default: checkpoint fp32")
    truncate_prompts: bool = Field(
        False, description="cut prompts longer than the context from the left (counted) instead of failing"
    )
    checkpoints: list[str] = Field(default_factory=list, description="default: the newest checkpoint")
    tokenizer: str | None = Field(
        None, description="tokenizer dir of the checkpoints (an imported model's HF folder); default WORKDIR/tokenizer"
    )
    speculative: bool = Field(False, description="MTP self-speculative decoding for greedy benchmarks (same text)")
    score_timeout_s: float = Field(5.0, gt=0.0, description="math-verify budget per sample")
    contamination: bool = Field(True, description="13-gram overlap of each benchmark with WORKDIR/data/output")
    contamination_ngram: int = Field(13, ge=1)
