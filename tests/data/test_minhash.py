"""`FastMinhashDedupSignature` gives datatrove's shingles and signatures exactly, only faster."""

from __future__ import annotations

import numpy as np
import pytest
from datatrove.pipeline.dedup.minhash import MinhashDedupSignature
from datatrove.utils.text import PUNCTUATION, TextNormConfig
from datatrove.utils.text import simplify_text as datatrove_simplify
from hypothesis import given, settings
from hypothesis import strategies as st

from crawl2score.data.minhash import FastMinhashDedupSignature, simplify_text
from crawl2score.data.tokenizers import _MIXED_TOKEN, ScriptAwareTokenizer

TEXTS = [
    "The Quick brown fox, on Monday 12 January 2024, paid 1,234.50 — “naïve” café déjà vu!",
    "Tiếng Việt có dấu: ạ ỗ ữ. Ångström, Øresund, Straße, ﬁnance, ①②, Ǆ.",
    "数据去重：近似重复的网页，用五个字的片段比较。日本語のテキスト、カタカナ。한국어 문장입니다.",
    "combining e\u0301\u0302 and x\u0300 marks, zero\u200bwidth, tabs\tand\x1c\x1fcontrols\u3000here",
    PUNCTUATION + " only punctuation around " + PUNCTUATION,
    "",
    "   ",
    "one two three",  # fewer words than the 5-gram
]


@pytest.mark.parametrize("text", TEXTS)
def test_simplify_text_matches_datatrove(text: str) -> None:
    assert simplify_text(text) == datatrove_simplify(text)
    for config in (TextNormConfig(norm_whitespace=False), TextNormConfig(remove_punctuation=False)):
        assert simplify_text(text, config) == datatrove_simplify(text, config)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_simplify_text_matches_datatrove_on_any_text(text: str) -> None:
    assert simplify_text(text) == datatrove_simplify(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_ascii_fast_path_matches_the_regex(text: str) -> None:
    text = text.encode("ascii", "ignore").decode() + " " + text
    tok = ScriptAwareTokenizer()
    assert tok.word_tokenize(text) == _MIXED_TOKEN.findall(text)
    ascii_only = text.encode("ascii", "ignore").decode()
    assert tok.word_tokenize(ascii_only) == _MIXED_TOKEN.findall(ascii_only)


def test_fast_step_gives_datatrove_shingles_and_signatures(tmp_path) -> None:
    ours = FastMinhashDedupSignature(str(tmp_path / "a"), language=ScriptAwareTokenizer())
    theirs = MinhashDedupSignature(str(tmp_path / "b"), language=ScriptAwareTokenizer())
    for text in TEXTS:
        shingles = ours.get_shingles(text)
        assert shingles.dtype == np.uint64 and shingles.shape[1:] == (1,)
        assert np.array_equal(shingles, theirs.get_shingles(text))
        if len(shingles):
            assert ours.get_signature(shingles) == theirs.get_signature(shingles)


def test_mark_removal_matches_unicodedata_on_every_code_point() -> None:
    import unicodedata

    from crawl2score.data.minhash import _nonspacing_marks

    every = "".join(chr(cp) for cp in range(0x110000) if not 0xD800 <= cp < 0xE000)
    expected = "".join(c for c in every if unicodedata.category(c) != "Mn")
    assert _nonspacing_marks().sub("", every) == expected
