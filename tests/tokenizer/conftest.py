"""Fixtures of the tokenizer tests: a small generated corpus and a tokenizer trained on it, once a session."""

from __future__ import annotations

from pathlib import Path

import pytest

from crawl2score.config.tokenizer import TokenizerConfig
from crawl2score.tokenizer.synthetic import write_corpus
from crawl2score.tokenizer.train import train_tokenizer

SMALL_VOCAB = 2048


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """~1.5 MB of generated English + Chinese in two datatrove JSONL.gz files."""
    return write_corpus(tmp_path_factory.mktemp("corpus"), 1_500_000, files=2, seed=1)


@pytest.fixture(scope="session")
def small_cfg() -> TokenizerConfig:
    return TokenizerConfig(vocab_size=SMALL_VOCAB, require_exact_vocab=True, heldout_fraction=0.05, shard_tokens=50_000)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, small_corpus: list[Path], small_cfg: TokenizerConfig):
    """(tokenizer dir, figures) of a tokenizer trained on the small corpus, baseline included."""
    out = tmp_path_factory.mktemp("work") / "tokenizer"
    figures = train_tokenizer(small_cfg, small_corpus, out)
    return out, figures
