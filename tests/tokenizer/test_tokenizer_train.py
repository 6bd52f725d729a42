"""Training the stage's tokenizer: exact vocabulary, report figures, HF loading, the large exact-size case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crawl2score.config.tokenizer import TokenizerConfig
from crawl2score.tokenizer.bpe import load_tokenizer
from crawl2score.tokenizer.train import read_info, train_tokenizer


def test_small_corpus_reaches_exact_vocab_with_report(trained, small_cfg) -> None:
    path, figures = trained
    vocab = small_cfg.vocab_size
    assert figures["vocab_size"] == figures["learned_size"] == vocab
    assert figures["filler_tokens"] == 0
    assert load_tokenizer(path).get_vocab_size() == vocab
    for lang in ("en", "zh"):
        row = figures["heldout"][lang]
        assert row["bytes_per_token"] > 1.0 and row["baseline_bytes_per_token"] > 1.0
    assert 0 < figures["heldout"]["vocab_used"] <= 1
    assert json.loads((path / "report.json").read_text()) == figures
    info = read_info(path)
    assert info["special_tokens"][:3] == ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"]
    assert (path / "baseline" / "tokenizer.json").is_file()


def test_training_is_deterministic(tmp_path: Path, small_corpus, small_cfg, trained) -> None:
    cfg = small_cfg.model_copy(update={"baseline": False})
    train_tokenizer(cfg, small_corpus, tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json").read_bytes() == (trained[0] / "tokenizer.json").read_bytes()


def test_small_corpus_shortfall_warns_and_pads(tmp_path: Path, small_corpus, caplog) -> None:
    cfg = TokenizerConfig(vocab_size=8192, baseline=False, byte_budget=20_000, heldout_fraction=0.0)
    figures = train_tokenizer(cfg, small_corpus, tmp_path / "tok")
    assert figures["vocab_size"] == 8192 and figures["filler_tokens"] > 0
    assert figures["learned_size"] + figures["filler_tokens"] == 8192
    assert "VOCABULARY SHORT" in caplog.text
    assert figures["heldout"]["en"] is None  # nothing held out: reported as missing, not invented


@pytest.mark.slow
def test_50mb_corpus_gives_exactly_102400_and_loads_in_autotokenizer(tmp_path: Path) -> None:
    """The issue's acceptance case (several minutes on 2 cores: BPE's merge loop is single-threaded)."""
    from transformers import AutoTokenizer

    from crawl2score.tokenizer.synthetic import write_corpus

    files = write_corpus(tmp_path / "corpus", 52_000_000, files=4, seed=7)
    cfg = TokenizerConfig(require_exact_vocab=True, baseline=False)
    figures = train_tokenizer(cfg, files, tmp_path / "tokenizer")
    assert figures["train_bytes"] >= 50_000_000
    assert figures["vocab_size"] == figures["learned_size"] == 102_400
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "tokenizer"))
    assert len(hf) == 102_400 and hf.eos_token_id == 1
    text = "DeepSeek 分词器 2024 🚀"
    assert hf.decode(hf(text)["input_ids"]) == text
