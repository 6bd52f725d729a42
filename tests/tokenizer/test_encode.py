"""tiktoken gives the HF tokenizer's ids: the regex engines agree, then the BPEs agree on arbitrary text."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Regex, pre_tokenizers

from crawl2score.config.tokenizer import TokenizerConfig
from crawl2score.tokenizer.bpe import PRE_TOKENIZE_PATTERN, TIKTOKEN_PATTERN, load_tokenizer, reference_pre_tokenizer
from crawl2score.tokenizer.corpus import iter_documents
from crawl2score.tokenizer.encode import EncoderError, HFEncoder, TiktokenEncoder, load_encoder
from crawl2score.tokenizer.train import train_tokenizer

BYTES = {bytes([b]): b for b in range(256)}
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}"
# Every character class of PRE_TOKENIZE_PATTERN and of the gap alternative TIKTOKEN_PATTERN adds.
CLASSES = [
    r"\p{N}",
    rf"[[{_CJK}]&&[\p{{L}}\p{{M}}]]",
    rf"[[{_CJK}]&&[\p{{P}}\p{{S}}]]",
    rf"[[\p{{L}}\p{{M}}]&&[^{_CJK}]]",
    rf"[[\p{{P}}\p{{S}}]&&[^{_CJK}]]",
    r"[^\S\r\n]",
    r"[\r\n]",
    r"\s",
    rf"[^\s\p{{N}}{_CJK}]",
    r"[^\p{L}\p{M}\p{N}\p{P}\p{S}\s]",
    r"(?i:[sdmt])",
    r"(?i:[lvre])",
]
# Planes 0-3 (all assigned scripts), plane 14 (tags, variation selectors), a slice of private use.
CODE_POINTS = [
    c for c in [*range(0x40000), *range(0xE0000, 0xE1000), *range(0xF0000, 0xF0100)] if not 0xD800 <= c < 0xE000
]
ALL_CHARS = "".join(map(chr, CODE_POINTS))


@pytest.mark.parametrize("cls", CLASSES)
def test_regex_engines_agree_on_every_class_for_every_code_point(cls: str) -> None:
    """Oniguruma (HF) and fancy-regex (tiktoken, rustbpe) put the same code points in each class.

    tiktoken drops text its regex does not match, so encoding with byte ranks returns the members.
    """
    fancy = set(
        bytes(
            tiktoken.Encoding("c", pat_str=cls, mergeable_ranks=BYTES, special_tokens={}).encode_ordinary(ALL_CHARS)
        ).decode()
    )
    left = pre_tokenizers.Split(Regex(cls), behavior="removed").pre_tokenize_str(ALL_CHARS)
    oniguruma = set(ALL_CHARS) - set("".join(p for p, _ in left))
    assert fancy == oniguruma, sorted(map(hex, map(ord, fancy ^ oniguruma)))[:20]
    assert fancy  # a class that matches nothing would pass for the wrong reason


# One character per class and seam (space kinds, line breaks, apostrophe + contraction letters, digits, CJK
# letter/symbol, kana, mark, control, format, emoji).
ALPHABET = list("aZs \n\r\t'1!中カ\u0301\x00\xa0\u3000㋐ー😀")


@pytest.fixture(scope="module")
def piece_encoding() -> tiktoken.Encoding:
    """Every string of up to 4 ALPHABET characters is one token: each piece comes back whole."""
    ranks = dict(BYTES)
    for n in range(1, 5):
        for chars in itertools.product(ALPHABET, repeat=n):
            ranks.setdefault("".join(chars).encode(), len(ranks))
    return tiktoken.Encoding("pieces", pat_str=TIKTOKEN_PATTERN, mergeable_ranks=ranks, special_tokens={})


def test_tiktoken_pattern_splits_as_the_hf_pre_tokenizer(piece_encoding: tiktoken.Encoding) -> None:
    """All 137,560 strings of 1-4 characters: the same pieces (so also the gap runs HF keeps)."""
    split = pre_tokenizers.Split(Regex(PRE_TOKENIZE_PATTERN), behavior="isolated")
    texts = ["".join(c) for n in range(1, 5) for c in itertools.product(ALPHABET, repeat=n)]
    for text, ids in zip(texts, piece_encoding.encode_ordinary_batch(texts, num_threads=2), strict=True):
        pieces = [piece_encoding.decode_single_token_bytes(i).decode() for i in ids]
        assert pieces == [p for p, _ in split.pre_tokenize_str(text)], repr(text)


@pytest.fixture(scope="session", params=["rustbpe", "tokenizers"])
def trained_8k(request, tmp_path_factory: pytest.TempPathFactory, small_corpus: list[Path]) -> Path:
    """A tokenizer of 8,192 entries (more merges to exercise than the 2,048 fixture) from each trainer."""
    cfg = TokenizerConfig(vocab_size=8192, trainer=request.param, baseline=False, heldout_fraction=0.05)
    out = tmp_path_factory.mktemp(f"tok8k-{request.param}") / "tokenizer"
    figures = train_tokenizer(cfg, small_corpus, out)
    assert figures["encoder"] == "tiktoken"  # and tiktoken matched HF on the held-out text
    return out


@pytest.fixture(scope="session")
def encoders(trained_8k: Path) -> tuple[HFEncoder, TiktokenEncoder]:
    tiktoken_encoder = load_encoder(trained_8k, "auto")
    assert isinstance(tiktoken_encoder, TiktokenEncoder)
    return HFEncoder(trained_8k), tiktoken_encoder


def test_same_ids_on_the_corpus(encoders, small_corpus: list[Path]) -> None:
    hf, tk = encoders
    texts = [d.text for d in iter_documents(small_corpus)]
    assert [list(x) for x in tk.encode_batch(texts)] == hf.encode_batch(texts)


SAMPLES = [
    "The quick brown fox jumps over the lazy dog. Don't stop: it's 3.14159!",
    "我们是中国人，我们爱和平。深度求索（DeepSeek）发布了新模型。",
    "2024-12-02 12:34:56 +0800 ١٢٣ Ⅻ ½ 〇",
    "👩‍💻🚀🎉 ❤️ 🇨🇳 👍🏽 emoji😀text",
    "ctrl\x00\x01\x07\x1b[0m\x7f\u200b\u200d\ufeff\u2028\u2029\x85 tab\there\r\n\r\n",
    "  indented\n    code(x) -> {y: [1, 2]}\n\n\n",
    "カード ひらがな 한국어 café\u0301 naïve ﬁ Å",
    "<｜end▁of▁sentence｜> literal specials <｜begin▁of▁sentence｜>",
]


def test_same_ids_on_english_chinese_digits_emoji_controls(encoders) -> None:
    hf, tk = encoders
    assert [list(x) for x in tk.encode_batch(SAMPLES)] == hf.encode_batch(SAMPLES)


TEXT = st.lists(
    st.one_of(
        st.text(st.characters(exclude_categories=["Cs"]), max_size=30),  # any Unicode, unassigned included
        st.sampled_from(SAMPLES),
        st.text(alphabet="abcdefghij klmnopqrst", max_size=300),  # long words: many merges
        st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x4F00), max_size=60),
        st.text(alphabet=" \t\n\r\u3000\u00a0\x00\x1b0123456789", max_size=40),
    ),
    max_size=10,
).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_same_ids_on_arbitrary_unicode(encoders, text: str) -> None:
    hf, tk = encoders
    assert list(tk.encode_batch([text])[0]) == hf.encode_batch([text])[0]


def test_auto_falls_back_to_tokenizers_when_tiktoken_cannot_reproduce(trained, tmp_path: Path, caplog) -> None:
    """A tokenizer.json with the three-pass pre-tokenizer (same splits, other form) is not matched."""
    tok = load_tokenizer(trained[0])
    tok.pre_tokenizer = reference_pre_tokenizer()
    tok.save(str(tmp_path / "tokenizer.json"))
    with caplog.at_level(logging.INFO, logger="crawl2score.tokenizer"):
        assert load_encoder(tmp_path, "auto").name == "tokenizers"
    assert "pre-tokenizer is not ours" in caplog.text
    with pytest.raises(EncoderError, match="pre-tokenizer is not ours"):
        load_encoder(tmp_path, "tiktoken")
    with pytest.raises(ValueError, match="unknown encoder"):
        load_encoder(tmp_path, "fast")


def test_tiktoken_serves_a_tokenizer_with_filler_tokens(tmp_path: Path) -> None:
    """A short vocabulary padded with filler specials: same special ids, size and ids as tokenizers."""
    from crawl2score.tokenizer.bpe import save_hf
    from crawl2score.tokenizer.ranks import train_rustbpe

    result = train_rustbpe([["tiny corpus here"] * 3], 1000, reserved=2)
    assert result.filler_tokens > 0
    save_hf(result.tokenizer, tmp_path)
    tk, hf = load_encoder(tmp_path, "tiktoken"), load_encoder(tmp_path, "tokenizers")
    assert (tk.special_ids, tk.vocab_size) == (hf.special_ids, hf.vocab_size) == (hf.special_ids, 1000)
    text = "tiny corpus here <｜end▁of▁sentence｜> <｜reserved▁900｜> 中文 9"
    assert list(tk.encode_batch([text])[0]) == hf.encode_batch([text])[0]


def test_ranks_cache_is_what_parsing_gives_and_only_while_current(trained_8k: Path, tmp_path: Path) -> None:
    """The stage's cached ranks equal those parsed from tokenizer.json; an edited tokenizer.json, another
    pattern or a cut-short cache file is parsed again instead, never served stale."""
    import shutil

    from crawl2score.tokenizer.encode import RANKS_CACHE, read_ranks_cache, write_ranks_cache
    from crawl2score.tokenizer.ranks import ranks_from_tokenizer_json, read_tokenizer_json

    assert (trained_8k / RANKS_CACHE).is_file()  # written by the tokenizer stage
    cached = read_ranks_cache(trained_8k)
    assert cached is not None
    parsed = ranks_from_tokenizer_json(read_tokenizer_json(trained_8k))
    assert not isinstance(parsed, str)
    hf = HFEncoder(trained_8k)
    assert cached == (parsed[0], (hf.special_ids, hf.vocab_size))

    work = tmp_path / "tok"
    shutil.copytree(trained_8k, work)
    raw = (work / RANKS_CACHE).read_bytes()
    (work / RANKS_CACHE).write_bytes(raw[:-1])
    assert read_ranks_cache(work) is None  # cut short
    (work / RANKS_CACHE).write_bytes(raw.replace(b'"pattern": "', b'"pattern": "x', 1))
    assert read_ranks_cache(work) is None  # another pattern than this code's
    for header in (b"[]", b"null", b"[" * 100_000):
        (work / RANKS_CACHE).write_bytes(header + raw[raw.index(b"\n") :])
        assert read_ranks_cache(work) is None  # a header that is no object
    (work / RANKS_CACHE).write_bytes(raw)
    assert read_ranks_cache(work) == cached
    # An edited tokenizer.json (here: a special token renamed) is read afresh, not through the old cache.
    text = (work / "tokenizer.json").read_text(encoding="utf-8")
    (work / "tokenizer.json").write_text(text.replace("<｜▁pad▁｜>", "<｜pad｜>"), encoding="utf-8")
    assert read_ranks_cache(work) is None
    with pytest.raises(ValueError, match="lacks special tokens"):
        load_encoder(work, "tiktoken")
    # A tokenizer tiktoken cannot serve gets no cache.
    tok = load_tokenizer(trained_8k)
    tok.pre_tokenizer = reference_pre_tokenizer()
    other = tmp_path / "other"
    other.mkdir()
    tok.save(str(other / "tokenizer.json"))
    assert write_ranks_cache(other) is False and not (other / RANKS_CACHE).exists()
