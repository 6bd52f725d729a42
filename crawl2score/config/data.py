"""Configuration of the data stage (Common Crawl WARC → deduplicated English + Chinese corpus)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# sbatch options the executor writes itself; setting them in sbatch_args would silently override these.
_SBATCH_OWNED = {
    "partition": "executor.partition",
    "time": "executor.time",
    "qos": "executor.qos",
    "cpus-per-task": "executor.cpus_per_task",
    "mem-per-cpu": "executor.mem_per_cpu_gb",
    "job-name": "the stage (crawl2score-<stage>)",
    "array": "datatrove (one array task per datatrove task)",
    "output": "datatrove (logs under WORKDIR/data/.work-*/logs/<stage>/slurm_logs)",
    "error": "datatrove (logs under WORKDIR/data/.work-*/logs/<stage>/slurm_logs)",
    "dependency": "the stage chain (afterok on the previous stage)",
}


class ExecutorConfig(_Section):
    """Where datatrove runs its steps. Local by default; Slurm and Ray for clusters.

    * local: `LocalPipelineExecutor`; `workers` processes (forkserver) run `tasks` shards; workers=1 runs
      in-process (what tests and Prefect workers without a `__main__` guard need).
    * slurm: `SlurmPipelineExecutor`, one job array per stage chained with `depends`; the stage submits and
      then waits for completion markers. `partition` is required; `time` is `[D-]HH:MM:SS`; `sbatch_args`
      adds `#SBATCH --key=value` lines but may not set what the keys above (or datatrove) set.
    * ray: `RayPipelineExecutor` on `ray_address` (an existing cluster, "auto") or a local Ray started
      here (no dashboard, shut down afterwards); needs `pip install 'crawl2score[ray]'` and a logging dir
      every worker can see. `workers` tasks run at once, each reserving `cpus_per_task` CPUs and
      `mem_per_cpu_gb` x `cpus_per_task` GB.
    """

    kind: Literal["local", "slurm", "ray"] = "local"
    tasks: int = Field(2, ge=1, description="datatrove tasks (input shards) per pipeline stage")
    workers: int = Field(2, ge=1, description="processes running tasks at once (local executor)")
    start_method: Literal["forkserver", "spawn", "fork"] = "forkserver"
    # Slurm: validated here so a bad value fails before a job is queued.
    partition: str | None = None
    time: str = "24:00:00"
    qos: str = "normal"
    cpus_per_task: int = Field(1, ge=1)
    mem_per_cpu_gb: int = Field(2, ge=1)
    sbatch_args: dict[str, str] = Field(default_factory=dict)
    venv_path: str | None = Field(
        None, description="slurm: venv (its bin/activate) or activate script sourced in each job (default: none)"
    )
    poll_s: float = Field(30.0, gt=0, description="slurm: seconds between completion checks")
    # Ray: address of an existing cluster ("auto"), or None for a local one.
    ray_address: str | None = None

    @model_validator(mode="after")
    def _check_backend(self) -> ExecutorConfig:
        if self.kind == "slurm":
            if not self.partition:
                raise ValueError("executor.partition is required when executor.kind is 'slurm'")
            if not re.fullmatch(r"(\d+-)?\d{1,3}:[0-5]\d:[0-5]\d", self.time):
                raise ValueError(f"executor.time {self.time!r} is not [D-]HH:MM:SS")
            if not re.fullmatch(r"[\w.,-]+", self.partition):
                raise ValueError(f"executor.partition {self.partition!r} is not a Slurm partition name")
            for key in self.sbatch_args:
                if key.startswith("-") or not re.fullmatch(r"[a-z][a-z0-9-]*", key):
                    raise ValueError(f"executor.sbatch_args key {key!r}: give the option name without dashes")
                if key in _SBATCH_OWNED:
                    raise ValueError(f"executor.sbatch_args[{key!r}] is set by {_SBATCH_OWNED[key]}")
            if self.venv_path is not None and not self.venv_path.strip():
                raise ValueError("executor.venv_path must be a path or null")
        if self.kind == "ray" and self.ray_address is not None and not self.ray_address.strip():
            raise ValueError("executor.ray_address must be 'auto', an address, or null")
        return self


class DataConfig(_Section):
    """Inputs, filters and dedup settings. Defaults follow FineWeb and DeepSeek's data report."""

    input: list[str] = Field(
        default_factory=list,
        description="local paths/globs, fsspec URLs or Common Crawl ids (CC-MAIN-2024-10); empty = sample data",
    )
    cc_base_url: str = "https://data.commoncrawl.org"
    max_files: int | None = Field(None, ge=1)
    max_documents: int | None = Field(None, ge=1, description="HTML records read, split evenly over tasks")
    languages: list[str] = Field(default_factory=lambda: ["en", "zh"])
    language_threshold: float = Field(0.65, ge=0.0, le=1.0)
    language_id_chars: int = Field(
        10_000, ge=0, description="characters of a page language ID reads (fastText's cost is linear); 0 = all"
    )
    max_record_bytes: int = Field(2_000_000, ge=1024, description="larger WARC records are skipped and counted")
    extractor: Literal["trafilatura", "resiliparse"] = Field(
        "resiliparse",
        description="HTML to text: resiliparse (C++, ~20x faster) or trafilatura (FineWeb's); BENCHMARKS.md compares",
    )
    extract_timeout_s: float = Field(1.0, gt=0, description="extraction time per page before it is dropped")
    keep_removed: bool = Field(True, description="write what each filter removed under data/removed/<step>/")
    minhash_ngram: int = Field(5, ge=1)
    minhash_buckets: int = Field(14, ge=1)
    minhash_hashes_per_bucket: int = Field(8, ge=1)
    quality_tokenizer: Literal["regex", "spacy"] = Field(
        "regex", description="English words for the quality filters: regex (~30x faster) or spaCy's tokenizer"
    )
    minhash_tokenizer: Literal["whitespace", "spacy"] = Field(
        "whitespace", description="whitespace: split on spaces, one token per CJK character (7x faster than spacy)"
    )
    decontaminate: bool = Field(
        False, description="drop documents sharing a 13-gram with decontaminate_benchmarks (after quality filters)"
    )
    decontaminate_benchmarks: list[str] = Field(
        default_factory=lambda: ["aime24", "aime25", "math500", "cnmo24"],
        description="benchmarks whose problems decontaminate checks (files as the eval stage finds them)",
    )
    sample_pages: int = Field(2400, ge=100, description="pages in the generated sample corpus")
    sample_seed: int = 0
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)

    @model_validator(mode="after")
    def _check_languages(self) -> DataConfig:
        unknown = sorted(set(self.languages) - {"en", "zh"})
        if unknown:
            raise ValueError(f"languages {unknown} have no filter settings (supported: en, zh)")
        if not self.languages:
            raise ValueError("languages must name at least one of en, zh")
        return self

    @model_validator(mode="after")
    def _check_decontaminate(self) -> DataConfig:
        from crawl2score.benchmarks import short_name

        try:
            self.decontaminate_benchmarks = [short_name(b) for b in self.decontaminate_benchmarks]
        except KeyError as exc:
            raise ValueError(f"decontaminate_benchmarks: {exc.args[0]}") from None
        if self.decontaminate and not self.decontaminate_benchmarks:
            raise ValueError("decontaminate needs at least one benchmark in decontaminate_benchmarks")
        return self
