"""Configuration of the evaluation stage (lm-eval on AIME 2024, MATH-500, CNMO 2024)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[str] = Field(default_factory=lambda: ["aime24", "math500", "cnmo24"])
    protocol: Literal["chat", "base"] = "base"
    benchmarks_dir: str | None = Field(None, description="local JSONL benchmarks; default $CRAWL2SCORE_BENCHMARKS_DIR")
    limit: int | None = Field(None, ge=1, description="problems per task")
    max_new_tokens: int = Field(8192, ge=1)
    num_samples: int = Field(16, ge=1, description="samples per problem for the chat protocol")
    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    batch_size: int = Field(8, ge=1)
    seed: int = 1234
    device: str = "cpu"
    checkpoints: list[str] = Field(default_factory=list, description="default: the newest checkpoint")
