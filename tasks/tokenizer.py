"""Prefect tasks of the tokenizer stage: thin wrappers over `crawl2score.tokenizer`.

Call `.fn(...)` to run the plain function without Prefect (tests do).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from crawl2score.config.tokenizer import TokenizerConfig
from crawl2score.tasks._prefect import Progress, logger, table_artifact
from crawl2score.workdir import stage_dir


@task(name="tokenizer-inputs")
def corpus_files_task(cfg: TokenizerConfig, workdir: str) -> list[str]:
    """Corpus files: `tokenizer.input` (dir or glob) or the data stage's output. Local files: no retries."""
    from crawl2score.tokenizer.corpus import corpus_files

    files = [str(p) for p in corpus_files(cfg.input, workdir)]
    logger().info("tokenizer: %d input file(s) from %s", len(files), cfg.input or stage_dir(workdir, "data"))
    return files


@task(name="tokenizer")
def tokenizer_task(cfg: TokenizerConfig, workdir: str, files: list[str]) -> dict[str, Any]:
    """Train the BPE (and its baseline) into WORKDIR/tokenizer/; returns the figures of the report."""
    from crawl2score.tokenizer.train import train_tokenizer

    progress = Progress(f"tokenizer: train BPE of {cfg.vocab_size:,}", total=1.0)
    figures = train_tokenizer(cfg, [Path(f) for f in files], stage_dir(workdir, "tokenizer"), on_progress=progress.set)
    progress.finish()
    log = logger()
    if figures["filler_tokens"]:
        log.warning(
            "TOKENIZER VOCABULARY SHORT: BPE learned %s of %s entries; %s reserved filler tokens appended "
            "(tokenizer.require_exact_vocab=true makes this an error)",
            f"{figures['learned_size']:,}",
            f"{figures['vocab_size']:,}",
            f"{figures['filler_tokens']:,}",
        )
    log.info(
        "tokenizer: %s entries from %.1f MB in %.1f s (%.2f MB/s)",
        f"{figures['vocab_size']:,}",
        figures["train_bytes"] / 1e6,
        figures["train_seconds"],
        figures["train_mb_per_s"],
    )
    table_artifact("tokenizer-heldout", _heldout_rows(figures), description="held-out bytes/token vs. baseline")
    return figures


def _heldout_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for lang, row in figures["heldout"].items():
        if isinstance(row, dict):
            rows.append({"language": lang, **{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}})
    return rows
