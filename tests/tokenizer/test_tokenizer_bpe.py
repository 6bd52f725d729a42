"""The BPE itself: exact size, special tokens, pre-tokenizer splits, round trip, HF loading."""

from __future__ import annotations

import random

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
    reference_pre_tokenizer,
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


def decoded_pieces(text: str) -> list[str]:
    from tokenizers.decoders import ByteLevel

    dec = ByteLevel()
    return [dec.decode([p]) for p in pieces(text)]


def test_digits_inside_words_cjk_and_space_are_single_pieces() -> None:
    assert decoded_pieces("v2.0 年2024") == ["v", "2", ".", "0", " ", "年", "2", "0", "2", "4"]
    assert decoded_pieces("x١٢") == ["x", "١", "٢"]  # any Unicode digit, not only ASCII


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, world!!", ["Hello", ",", " world", "!!"]),  # punctuation runs keep one leading space
        ("a -> b", ["a", " ->", " b"]),
        ("x   y", ["x", "  ", " y"]),  # the last space goes to the word
        ("x  \n\n  y", ["x", "  \n\n", " ", " y"]),  # white space ending in line breaks is one piece
        ("you'RE here", ["you", "'RE", " here"]),
        ("café\u0301 naïve", ["café\u0301", " naïve"]),  # combining marks stay in the word
        ("日本語の한국어", ["日本語の한국어"]),  # Han, kana and Hangul in one run
        # ー (U+30FC) is Common script, not Katakana: it splits a katakana word (pinned, not desired).
        ("カード", ["カ", "ー", "ド"]),
        ("中文 English中文", ["中文", " English", "中文"]),
        ("中文  1", ["中文", "  ", "1"]),  # spaces before a digit or CJK stay one piece
        ("「引用」。", ["「", "引用", "」。"]),
    ],
)
def test_pre_tokenizer_pieces(text: str, expected: list[str]) -> None:
    assert decoded_pieces(text) == expected
    assert [p for p, _ in reference_pre_tokenizer().pre_tokenize_str(text)] == pieces(text)


# The one-pass regex must split exactly as the three passes it replaces, including at the seams: digits that
# are CJK script (〇), CJK-script symbols (㋐ ⼀), spaces before digits/CJK, marks, controls, ZWJ, emoji.
SEAMS = list("ab Z'sdtlvremé\u0301\t\n\r,.!?-_()😀\u200d\x00\x07\u00a0\u2028\u3000\u3099")
SEAMS += list("0123456789١Ⅻ½我们中〇一々〆あいカードー・ㇰｦ한국㉠㋐㌀⺀⼀〸\u302e") + ["\U0001f200", "\ue000"]


ONE_PASS, THREE_PASS = deepseek_pre_tokenizer(), reference_pre_tokenizer()


def test_one_pass_pre_tokenizer_splits_as_the_three_passes_on_seams() -> None:
    rng = random.Random(0)
    for _ in range(20_000):
        text = "".join(rng.choice(SEAMS) for _ in range(rng.randint(1, 16)))
        assert ONE_PASS.pre_tokenize_str(text) == THREE_PASS.pre_tokenize_str(text), text  # pieces and offsets


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(
        st.one_of(st.sampled_from(SEAMS), st.text(st.characters(exclude_categories=["Cs"]), max_size=6)),
        max_size=24,
    ).map("".join)
)
def test_one_pass_pre_tokenizer_splits_as_the_three_passes(text: str) -> None:
    assert ONE_PASS.pre_tokenize_str(text) == THREE_PASS.pre_tokenize_str(text)


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
    assert hf(text, split_special_tokens=True)["input_ids"] == ours  # no BOS added, special text as bytes
    assert hf.decode(ours) == text
    assert hf.eos_token_id in hf(text)["input_ids"]  # HF's default, as DeepSeek-V3's: special text is the id


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
