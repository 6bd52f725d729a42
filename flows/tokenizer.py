"""The tokenizer stage (train the BPE) and the tokens stage (encode the corpus into shards).

Both read the data stage's output (or `tokenizer.input`), both are keyed on the `tokenizer` config section;
the tokens stage also on the tokenizer's key, so retraining re-tokenizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from crawl2score.config import Config
from crawl2score.flows._stage import run_stage
from crawl2score.tasks.tokenizer import resolve_tokenizer_inputs, tokenize_corpus, train_tokenizer_task
from crawl2score.workdir import read_marker


class StageInputMissing(RuntimeError):
    """A stage this one reads has not completed in WORKDIR."""


def data_input_key(config: Config, files: list[str]) -> str:
    """The data stage's key, or for a user corpus (`tokenizer.input`) a fingerprint of its files."""
    from crawl2score.tokenizer.corpus import files_fingerprint

    if config.tokenizer.input:
        return "input-" + files_fingerprint(Path(f) for f in files)
    marker = read_marker(config.workdir, "data")
    if not marker:
        raise StageInputMissing(
            f"{config.workdir}/data: no completed data stage (run `crawl2score data` or pass --input)"
        )
    return str(marker["key"])


def tokenizer_key(config: Config) -> str:
    marker = read_marker(config.workdir, "tokenizer")
    if not marker:
        raise StageInputMissing(f"{config.workdir}/tokenizer: no trained tokenizer (run `crawl2score tokenizer`)")
    return str(marker["key"])


@flow(name="tokenizer")
def tokenizer_flow(config: Config, force: bool = False, input_keys: list[str] | None = None) -> dict[str, Any]:
    """Train the byte-level BPE into WORKDIR/tokenizer/ unless it is current for this config and corpus."""
    section = config.section_dict("tokenizer")
    files = resolve_tokenizer_inputs(section, config.workdir)
    keys = list(input_keys) if input_keys is not None else [data_input_key(config, files)]

    def body(_key: str) -> dict[str, Any]:
        return train_tokenizer_task(section, keys, config.workdir, files)

    return run_stage("tokenizer", config, "tokenizer", keys, body, force=force)


@flow(name="tokens")
def tokenize_flow(config: Config, force: bool = False, input_keys: list[str] | None = None) -> dict[str, Any]:
    """Encode the corpus into WORKDIR/tokens/ shards unless they are current for this corpus and tokenizer."""
    section = config.section_dict("tokenizer")
    files = resolve_tokenizer_inputs(section, config.workdir)
    keys = list(input_keys) if input_keys is not None else [data_input_key(config, files), tokenizer_key(config)]

    def body(_key: str) -> dict[str, Any]:
        return tokenize_corpus(section, keys, config.workdir, files)

    return run_stage("tokens", config, "tokenizer", keys, body, force=force)


if __name__ == "__main__":
    tokenizer_flow(Config())
    tokenize_flow(Config())
