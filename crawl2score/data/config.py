"""Configuration of the data stage (Common Crawl WARC → deduplicated English + Chinese corpus)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExecutorConfig(_Section):
    """Where datatrove runs its steps. Local by default; Slurm and Ray for clusters."""

    kind: Literal["local", "slurm", "ray"] = "local"
    tasks: int = Field(2, ge=1, description="datatrove tasks (input shards) per pipeline stage")
    workers: int = Field(2, ge=1, description="processes running tasks at once (local executor)")
    # Slurm: validated here so a bad value fails before a job is queued.
    partition: str | None = None
    time: str = "24:00:00"
    cpus_per_task: int = Field(1, ge=1)
    mem_per_cpu_gb: int = Field(2, ge=1)
    sbatch_args: dict[str, str] = Field(default_factory=dict)
    # Ray: address of an existing cluster ("auto"), or None for a local one.
    ray_address: str | None = None


class DataConfig(_Section):
    """Inputs, filters and dedup settings. Defaults follow FineWeb and DeepSeek's data report."""

    input: list[str] = Field(
        default_factory=list,
        description="local paths/globs, fsspec URLs or Common Crawl ids (CC-MAIN-2024-10); empty = sample data",
    )
    cc_base_url: str = "https://data.commoncrawl.org"
    max_files: int | None = Field(None, ge=1)
    max_documents: int | None = Field(None, ge=1)
    languages: list[str] = Field(default_factory=lambda: ["en", "zh"])
    language_threshold: float = Field(0.65, ge=0.0, le=1.0)
    max_record_bytes: int = Field(2_000_000, ge=1024, description="larger WARC records are skipped and counted")
    minhash_ngram: int = Field(5, ge=1)
    minhash_buckets: int = Field(14, ge=1)
    minhash_hashes_per_bucket: int = Field(8, ge=1)
    minhash_tokenizer: Literal["whitespace", "spacy"] = "whitespace"
    sample_pages: int = Field(2400, ge=100, description="pages in the generated sample corpus")
    sample_seed: int = 0
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
