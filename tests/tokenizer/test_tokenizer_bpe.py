"""The BPE itself: exact size, special tokens, pre-tokenizer splits, round trip, HF loading."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawl2score.tokenizer.bpe import (
    BOS,
    EOS,
    PAD,
    VocabShortfallError,
    deepseek_pre_tokenizer,
    load_tokenizer,
    reserved_token,
    special_ids,
    train_bpe,
)

SAMPLE = ["Hello world, 12345 apples. 你好世界，我们是中国人。 don't stop 😀 café\n\n  indented"] * 50


def pieces(text: str) -> list[str]:
    return [p for p, _ in deepseek_pre_tokenizer().pre_tokenize_str(text)]


def test_digits_are_split_one_by_one() -> None:
    assert [p for p in pieces("abc2024def") if p.isdigit()] == ["2", "0", "2", "4"]


def test_cjk_run_is_kept_apart_from_latin_and_punctuation() -> None:
    from tokenizers.decoders import ByteLevel

    dec = ByteLevel()
    got = [dec.decode([p]) for p in pieces("我们是中国人，hello世界")]
    assert got == ["我们是中国人", "，", "hello", "世界"]


def test_latin_words_keep_leading_space_and_contractions_split() -> None:
    from tokenizers.decoders import ByteLevel

    dec = ByteLevel()
    assert [dec.decode([p]) for p in pieces("we don't go")] == ["we", " don", "'t", " go"]


def test_specials_have_stable_low_ids_and_exact_size() -> None:
    result = train_bpe([SAMPLE], 300, reserved=5, min_frequency=1)
    tok = result.tokenizer
    assert special_ids(tok) == {"bos_id": 0, "eos_id": 1, "pad_id": 2}
    assert tok.token_to_id(reserved_token(4)) == 7
    assert tok.get_vocab_size() == 300 == result.vocab_size
    # Every byte is in the vocabulary even though the sample has few distinct bytes.
    assert result.learned_size - 8 - result.num_merges == 256


def test_shortfall_is_filled_with_reserved_tokens_and_reported() -> None:
    result = train_bpe([["tiny corpus"] * 3], 1000, reserved=2)
    assert result.vocab_size == result.tokenizer.get_vocab_size() == 1000
    assert result.filler_tokens == 1000 - result.learned_size > 0
    assert result.tokenizer.id_to_token(999) == reserved_token(2 + result.filler_tokens - 1)


def test_require_exact_vocab_makes_a_shortfall_an_error() -> None:
    with pytest.raises(VocabShortfallError, match="reached only"):
        train_bpe([["tiny corpus"] * 3], 1000, reserved=2, require_exact=True)


@pytest.fixture(scope="module")
def tok(trained):
    return load_tokenizer(trained[0])


def test_literal_special_token_text_is_not_a_special_token(tok) -> None:
    ids = special_ids(tok)
    for special in (BOS, EOS, PAD, reserved_token(0)):
        text = f"before {special} after{special}"
        enc = tok.encode(text, add_special_tokens=False).ids
        assert not set(enc) & {ids["bos_id"], ids["eos_id"], ids["pad_id"], tok.token_to_id(reserved_token(0))}
        assert tok.decode(enc, skip_special_tokens=False) == text


def test_hf_tokenizer_loads_offline_and_matches(trained) -> None:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path, figures = trained
    for cls in (AutoTokenizer, PreTrainedTokenizerFast):
        hf = cls.from_pretrained(str(path))
        assert len(hf) == figures["vocab_size"]
        assert (hf.bos_token, hf.eos_token, hf.pad_token) == (BOS, EOS, PAD)
        assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (0, 1, 2)
    text = f"Mixed 文本 with 42 and {EOS} literally."
    ours = load_tokenizer(path).encode(text, add_special_tokens=False).ids
    assert hf(text)["input_ids"] == ours  # no BOS added, literal special text stays text
    assert hf.decode(ours) == text


TRICKY = st.sampled_from(
    ["\u0301", "\u200d", "👩‍💻", "🇨🇳", "\x00", "\x1b", "\r\n", "\t", "   ", "中文", "ﬁ", "Å", "<｜"]
)
TEXT = st.lists(
    st.one_of(
        st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
        TRICKY,
        st.text(alphabet="abcxyz", min_size=200, max_size=2000),  # very long "words"
        st.text(alphabet=" \t\n\r\u3000\u00a0", max_size=50),  # whitespace runs
        st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), max_size=60),
    ),
    max_size=8,
).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT)
def test_round_trip_arbitrary_unicode(tok, text: str) -> None:
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert all(0 <= i < tok.get_vocab_size() for i in ids)
