"""Prefect tasks of the tokenizer and tokens stages: thin wrappers over `crawl2score.tokenizer`.

Call `.fn(...)` to run the plain function without Prefect (tests do).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from crawl2score.config.tokenizer import TokenizerConfig
from crawl2score.tasks._prefect import Progress, logger, stage_cache_key, table_artifact
from crawl2score.workdir import stage_dir


def default_input(workdir: str) -> str:
    return str(stage_dir(workdir, "data") / "output")


@task(name="tokenizer-inputs")
def resolve_tokenizer_inputs(section: dict[str, Any], workdir: str) -> list[str]:
    """Corpus files: `tokenizer.input` (dir or glob) or the data stage's output. Local files: no retries."""
    from crawl2score.tokenizer.corpus import find_input_files

    spec = TokenizerConfig.model_validate(section).input or default_input(workdir)
    files = [str(p) for p in find_input_files(spec)]
    logger().info("tokenizer: %d input file(s) from %s", len(files), spec)
    return files


@task(name="tokenizer-train", cache_key_fn=stage_cache_key("tokenizer"), refresh_cache=True)
def train_tokenizer_task(
    section: dict[str, Any], input_keys: list[str], workdir: str, files: list[str]
) -> dict[str, Any]:
    """Train the BPE (and its baseline) into WORKDIR/tokenizer/; returns the figures of the report.

    `refresh_cache=True`: the flow calls this only when WORKDIR lacks current output, so a cached result
    would be figures without files; the cache key still records the stage key in Prefect.
    """
    from crawl2score.tokenizer.train import train_tokenizer

    cfg = TokenizerConfig.model_validate(section)
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


@task(name="tokens-write", cache_key_fn=stage_cache_key("tokens"), refresh_cache=True)
def tokenize_corpus(section: dict[str, Any], input_keys: list[str], workdir: str, files: list[str]) -> dict[str, Any]:
    """Encode the corpus into WORKDIR/tokens/ shards + manifest; returns the figures (manifest sans shards)."""
    from crawl2score.tokenizer.shards import write_shards

    cfg = TokenizerConfig.model_validate(section)
    progress = Progress("tokens: encode corpus into shards", total=1.0)
    manifest = write_shards(
        [Path(f) for f in files],
        stage_dir(workdir, "tokenizer"),
        stage_dir(workdir, "tokens"),
        shard_tokens=cfg.shard_tokens,
        batch_docs=cfg.batch_docs,
        workers=cfg.workers,
        encoder=cfg.encoder,
        on_progress=progress.set,
    )
    progress.finish()
    shards = manifest.pop("shards")
    table_artifact(
        "tokens-shards",
        [{"path": s["path"], "num_tokens": s["num_tokens"], "num_docs": s["num_docs"]} for s in shards],
        description="token shards",
    )
    logger().info(
        "tokens: %s tokens, %s docs in %d shard(s), %.2f MB/s",
        f"{manifest['num_tokens']:,}",
        f"{manifest['num_docs']:,}",
        len(shards),
        manifest["mb_per_s"] or 0.0,
    )
    for key in ("format", "layout", "index_dtype"):
        manifest.pop(key, None)
    return {**manifest, "num_shards": len(shards)}
