"""Prefect task of the tokens stage: encode the corpus into uint32 shards (`crawl2score.tokenizer.shards`).

Call `tokens_task.fn(...)` to run the plain function without Prefect (tests do).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from crawl2score.config.tokenizer import TokenizerConfig
from crawl2score.tasks._prefect import Progress, logger, table_artifact
from crawl2score.workdir import stage_dir


@task(name="tokens")
def tokens_task(cfg: TokenizerConfig, workdir: str, files: list[str]) -> dict[str, Any]:
    """Encode the corpus into WORKDIR/tokens/ shards + manifest; returns the figures (manifest sans shards)."""
    from crawl2score.tokenizer.shards import write_shards

    progress = Progress("tokens: encode corpus into shards", total=1.0)
    manifest = write_shards(
        [Path(f) for f in files],
        stage_dir(workdir, "tokenizer"),
        stage_dir(workdir, "tokens"),
        shard_tokens=cfg.shard_tokens,
        batch_docs=cfg.batch_docs,
        workers=cfg.workers,
        encoder=cfg.encoder,
        heldout_fraction=cfg.heldout_fraction,
        seed=cfg.seed,
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
