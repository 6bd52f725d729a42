"""The tokens stage flow: encode the corpus with the trained tokenizer into uint32 shards."""

from __future__ import annotations

from typing import Any

from prefect import flow

from crawl2score.config import Config, apply_overrides
from crawl2score.flows._stage import run_stage, upstream_key
from crawl2score.flows.tokenizer import corpus_key
from crawl2score.tasks.tokenizer import corpus_files_task
from crawl2score.tasks.tokens import tokens_task


@flow(name="tokens")
def tokens_flow(config: Config, force: bool = False, overrides: list[str] | None = None) -> dict[str, Any]:
    """Encode the corpus into WORKDIR/tokens/ unless the shards are current for this corpus and tokenizer."""
    config = apply_overrides(config, overrides)  # `--set`-style keys over the deployed config
    files = corpus_files_task(config.tokenizer, config.workdir)
    input_keys = [corpus_key(config, files, "tokens"), upstream_key(config, "tokens", "tokenizer")]

    def body(_key: str) -> dict[str, Any]:
        return tokens_task(config.tokenizer, config.workdir, files)

    return run_stage("tokens", config, input_keys, body, force=force)


if __name__ == "__main__":
    tokens_flow(Config())
