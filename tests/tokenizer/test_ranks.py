"""rustbpe training and the ranks <-> HF bridge: exact size, same layout as HF's trainer, merges recovered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from crawl2score.config.tokenizer import TokenizerConfig
from crawl2score.tokenizer.bpe import (
    VocabShortfallError,
    reserved_token,
    special_ids,
    special_tokens,
    train_bpe,
)
from crawl2score.tokenizer.corpus import iter_documents
from crawl2score.tokenizer.ranks import (
    RanksError,
    hf_from_ranks,
    merges_from_ranks,
    ranks_from_tokenizer_json,
    to_bytes,
    train_rustbpe,
)
from crawl2score.tokenizer.train import evaluate

VOCAB = 2048
RESERVED = 29


@pytest.fixture(scope="module")
def texts(small_corpus: list[Path]) -> list[str]:
    return [d.text for d in iter_documents(small_corpus)]


@pytest.fixture(scope="module")
def hf_trained(texts: list[str]):
    return train_bpe([texts], VOCAB, reserved=RESERVED)


@pytest.fixture(scope="module")
def rust_trained(texts: list[str]):
    return train_rustbpe([texts], VOCAB, reserved=RESERVED)


def test_rustbpe_gives_exact_size_and_specials_first(rust_trained) -> None:
    tok = rust_trained.tokenizer
    assert tok.get_vocab_size() == rust_trained.vocab_size == rust_trained.learned_size == VOCAB
    assert rust_trained.filler_tokens == 0
    assert special_ids(tok) == {"bos_id": 0, "eos_id": 1, "pad_id": 2}
    assert tok.token_to_id(reserved_token(RESERVED - 1)) == RESERVED + 2
    assert rust_trained.num_merges == VOCAB - len(special_tokens(RESERVED)) - 256


def test_rustbpe_writes_the_layout_of_the_tokenizers_trainer(rust_trained, hf_trained) -> None:
    """Same JSON keys and settings, same specials and byte ids: only the learned part differs."""
    ours, theirs = json.loads(rust_trained.tokenizer.to_str()), json.loads(hf_trained.tokenizer.to_str())
    for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder", "added_tokens"):
        assert ours[part] == theirs[part], part
    assert {k: v for k, v in ours["model"].items() if k not in ("vocab", "merges")} == {
        k: v for k, v in theirs["model"].items() if k not in ("vocab", "merges")
    }
    first = len(special_tokens(RESERVED)) + 256
    by_id = lambda vocab: sorted(vocab, key=vocab.get)[:first]  # noqa: E731
    assert by_id(ours["model"]["vocab"]) == by_id(theirs["model"]["vocab"])
    assert len(ours["model"]["merges"]) == rust_trained.num_merges


def test_rustbpe_compresses_held_out_text_like_the_tokenizers_trainer(small_corpus, hf_trained) -> None:
    """Trained on one half of the corpus, measured on the other: bytes/token within 2% (1% at 102,400)."""
    docs = list(iter_documents(small_corpus))
    train, heldout = [d.text for d in docs[::2]], {"all": [d.text for d in docs[1::2]]}
    ours = evaluate(train_rustbpe([train], VOCAB, reserved=RESERVED).tokenizer, heldout, VOCAB)
    theirs = evaluate(train_bpe([train], VOCAB, reserved=RESERVED).tokenizer, heldout, VOCAB)
    a, b = ours["languages"]["all"]["bytes_per_token"], theirs["languages"]["all"]["bytes_per_token"]
    assert abs(a / b - 1) < 0.02, (a, b)


def test_merges_recovered_from_ranks_are_the_trainers_own(hf_trained) -> None:
    """Given only the tokens in id order, the recovery finds exactly HF's merge list (one in three tokens
    has several splits into two earlier tokens, so this exercises the BPE replay)."""
    data = json.loads(hf_trained.tokenizer.to_str())
    vocab, added = data["model"]["vocab"], {t["content"] for t in data["added_tokens"]}
    tokens = [to_bytes(t) for t in sorted(vocab, key=vocab.get) if t not in added]
    merges, duplicates = merges_from_ranks(tokens)
    assert duplicates == 0
    assert [tuple(to_bytes(x) for x in m) for m in data["model"]["merges"]] == merges


def test_duplicate_and_impossible_tokens() -> None:
    singles = [bytes([b]) for b in range(256)]
    merges, duplicates = merges_from_ranks([*singles, b"ab", b"abc", b"bc", b"abc"])
    assert merges == [(b"a", b"b"), (b"ab", b"c"), (b"b", b"c")] and duplicates == 1
    tok, duplicates = hf_from_ranks([*singles, b"ab", b"ab"], special_tokens(0))
    assert tok.get_vocab_size() == 3 + 256 + 1 and duplicates == 1  # bos, eos, pad; bytes; "ab"
    with pytest.raises(RanksError, match="no merge of two earlier tokens"):
        merges_from_ranks([*singles, b"abc"])


def test_rustbpe_shortfall_is_filled_or_an_error() -> None:
    result = train_rustbpe([["tiny corpus"] * 3], 1000, reserved=2)
    assert result.tokenizer.get_vocab_size() == 1000 and result.filler_tokens == 1000 - result.learned_size > 0
    assert result.tokenizer.id_to_token(999) == reserved_token(2 + result.filler_tokens - 1)
    with pytest.raises(VocabShortfallError, match="reached only"):
        train_rustbpe([["tiny corpus"] * 3], 1000, reserved=2, require_exact=True)


def test_tiktoken_ranks_are_refused_for_foreign_tokenizers(rust_trained) -> None:
    data = json.loads(rust_trained.tokenizer.to_str())
    ranks, _pattern = ranks_from_tokenizer_json(data)
    assert ranks[b"a"] == rust_trained.tokenizer.token_to_id("a") and len(ranks) == VOCAB - 32
    swapped = json.loads(json.dumps(data))
    merges = swapped["model"]["merges"]
    merges[0], merges[1] = merges[1], merges[0]
    assert ranks_from_tokenizer_json(swapped) == "a merge repeats a token or comes out of id order"
    normalized = {**data, "normalizer": {"type": "NFC"}}
    assert ranks_from_tokenizer_json(normalized) == "tokenizer has a normalizer"


def test_config_trainer_choices() -> None:
    assert TokenizerConfig().trainer == "numba" and TokenizerConfig().encoder == "auto"
    assert TokenizerConfig(trainer="tokenizers", max_token_length=16).max_token_length == 16
    with pytest.raises(ValidationError, match="max_token_length needs tokenizer.trainer: tokenizers"):
        TokenizerConfig(max_token_length=16)
    with pytest.raises(ValidationError):
        TokenizerConfig(trainer="sentencepiece")
    with pytest.raises(ValidationError, match="min_frequency needs tokenizer.trainer: tokenizers"):
        TokenizerConfig(min_frequency=3)
    assert TokenizerConfig(trainer="tokenizers", min_frequency=3).min_frequency == 3
    with pytest.raises(ValidationError, match="vocab_size 512 leaves no room: .* so at least 513"):
        TokenizerConfig(vocab_size=512, reserved_special_tokens=254)
    assert TokenizerConfig(vocab_size=513, reserved_special_tokens=254).vocab_size == 513
