"""The tokenizer stage flow: train the byte-level BPE on the data stage's output (or `tokenizer.input`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from crawl2score.config import Config, apply_overrides
from crawl2score.flows._stage import run_stage, upstream_key
from crawl2score.tasks.tokenizer import corpus_files_task, tokenizer_task


def corpus_key(config: Config, files: list[str], stage: str = "tokenizer") -> str:
    """The data stage's key, or for a user corpus (`tokenizer.input`) a fingerprint of its files. `stage`:
    the stage reading it (tokenizer or tokens), whose input check runs first."""
    from crawl2score.tokenizer.corpus import files_fingerprint

    if config.tokenizer.input:
        return "input-" + files_fingerprint(Path(f) for f in files)
    return upstream_key(config, stage, "data")


@flow(name="tokenizer")
def tokenizer_flow(config: Config, force: bool = False, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train the BPE into WORKDIR/tokenizer/ unless it is current for this config, corpus and code."""
    config = apply_overrides(config, overrides)  # `--set`-style keys over the deployed config
    files = corpus_files_task(config.tokenizer, config.workdir)
    input_keys = [corpus_key(config, files)]

    def body(_key: str) -> dict[str, Any]:
        return tokenizer_task(config.tokenizer, config.workdir, files)

    return run_stage("tokenizer", config, input_keys, body, force=force)


if __name__ == "__main__":
    tokenizer_flow(Config())
