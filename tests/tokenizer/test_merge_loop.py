"""The numba trainer: Python's regex splits as the other engines do, the merge loop learns rustbpe's tokens,
and the stage with it writes the very tokenizer.json that rustbpe gives."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import rustbpe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Regex, pre_tokenizers

from crawl2score.config.tokenizer import TokenizerConfig
from crawl2score.tokenizer.bpe import GPT2_PATTERN, PRE_TOKENIZE_PATTERN, TIKTOKEN_PATTERN
from crawl2score.tokenizer.corpus import iter_documents
from crawl2score.tokenizer.merge_loop import learn_tokens
from crawl2score.tokenizer.pretokenize import _compiled, count_batch, count_words, splitter
from crawl2score.tokenizer.ranks import merges_from_ranks, train_numba, train_rustbpe
from crawl2score.tokenizer.train import train_tokenizer
from tests.tokenizer.test_encode import ALL_CHARS, ALPHABET, CLASSES, SAMPLES

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cls", CLASSES)
def test_python_regex_agrees_with_hf_on_every_class_for_every_code_point(cls: str) -> None:
    """The third engine (the numba trainer's counting) puts the same code points in each class as
    Oniguruma, which test_encode.py pins to fancy-regex."""
    python = set(_compiled(splitter(cls).exact).findall(ALL_CHARS))
    left = pre_tokenizers.Split(Regex(cls), behavior="removed").pre_tokenize_str(ALL_CHARS)
    oniguruma = set(ALL_CHARS) - set("".join(p for p, _ in left))
    assert python == oniguruma, sorted(map(hex, map(ord, python ^ oniguruma)))[:20]
    assert python


def test_python_regex_splits_as_the_hf_pre_tokenizer() -> None:
    """All 137,560 strings of 1-4 characters of test_encode's alphabet: the same pieces."""
    split = pre_tokenizers.Split(Regex(PRE_TOKENIZE_PATTERN), behavior="isolated")
    findall = splitter(TIKTOKEN_PATTERN).split
    for n in range(1, 5):
        for chars in itertools.product(ALPHABET, repeat=n):
            text = "".join(chars)
            assert findall(text) == [p for p, _ in split.pre_tokenize_str(text)], repr(text)


def rustbpe_tokens(texts: list[str], n_merges: int, pattern: str = TIKTOKEN_PATTERN) -> list[bytes]:
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(texts), 256 + n_merges, pattern=pattern)
    return [bytes(b) for b, _ in sorted(trainer.get_mergeable_ranks(), key=lambda item: item[1])]


def test_same_tokens_as_rustbpe_on_the_corpus(small_corpus: list[Path]) -> None:
    """8,192 entries on 1.5 MB of English and Chinese: every merge equal, in order, through the CJK
    characters' bytes, the words and the ties of the last merges."""
    texts = [d.text for d in iter_documents(small_corpus)]
    ours, splits = learn_tokens(count_batch(texts, TIKTOKEN_PATTERN), 8192 - 256)
    assert ours == rustbpe_tokens(texts, 8192 - 256)
    assert len(ours) == 8192
    # the merges the loop made are those the rank bridge would recover by replaying BPE
    assert merges_from_ranks(ours, splits) == merges_from_ranks(ours)


ODD = [
    "aaaaaaa aaaa aaa aa",  # overlapping pairs: left to right within a word
    "abababab ababa bab",  # a pair and its reverse
    "0000 1111 " * 5,  # digits are single pieces: no pairs at all
    "中中中中中 国国国 中国中国",  # a CJK character's own bytes, then characters
    "👩‍💻👩‍💻 🇨🇳🇨🇳",  # emoji sequences: long runs of 4-byte characters
    "\x00\x00\x00 \x1b\x1b \u200b\u200b",  # controls and format characters
]


def test_same_tokens_as_rustbpe_on_odd_words() -> None:
    for pattern in (TIKTOKEN_PATTERN, GPT2_PATTERN):
        tokens, splits = learn_tokens(count_batch(ODD, pattern), 300)
        assert tokens == rustbpe_tokens(ODD, 300, pattern)
        assert merges_from_ranks(tokens, splits) == merges_from_ranks(tokens)


TEXTS = st.lists(
    st.one_of(
        st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
        st.sampled_from(SAMPLES + ODD),
        st.text(alphabet="ab ", max_size=200),  # few symbols: long runs, many ties and overlaps
        st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x4E10), max_size=60),
    ),
    max_size=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=TEXTS, n_merges=st.integers(1, 400))
def test_same_tokens_as_rustbpe_on_arbitrary_text(texts: list[str], n_merges: int) -> None:
    """Any text, any number of merges, including more than the text has pairs for (both stop early)."""
    tokens, splits = learn_tokens(count_batch(texts, TIKTOKEN_PATTERN), n_merges)
    assert tokens == rustbpe_tokens(texts, n_merges)
    assert merges_from_ranks(tokens, splits) == merges_from_ranks(tokens)


def test_counting_in_processes_gives_the_counts_of_one_process(small_corpus: list[Path]) -> None:
    texts = [d.text for d in iter_documents(small_corpus)]
    batches = [texts[i : i + 20] for i in range(0, len(texts), 20)]
    assert len(batches) > 4
    one = count_words(batches, TIKTOKEN_PATTERN, workers=1)
    assert count_words(iter(batches), TIKTOKEN_PATTERN, workers=2) == one
    assert one == Counter(w for t in texts for w, _ in pre_tokenizers.Split(
        Regex(PRE_TOKENIZE_PATTERN), behavior="isolated").pre_tokenize_str(t))  # fmt: skip


def test_a_script_without_a_main_guard_still_counts(tmp_path: Path) -> None:
    """Spawned processes import the caller's script again; without `if __name__ == "__main__":` the pool
    breaks, and the counting finishes in the script's own process with a warning."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import logging, sys
            sys.path.insert(0, {str(REPO)!r})
            logging.basicConfig(level=logging.WARNING)
            from crawl2score.tokenizer.bpe import TIKTOKEN_PATTERN
            from crawl2score.tokenizer.pretokenize import count_words
            batches = [["one two three"] * 5, ["three four"] * 3, ["five 中文"]] * 4
            counts = count_words(batches, TIKTOKEN_PATTERN, workers=2)
            print("COUNTS", sorted(counts.items()))
            """
        )
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    expected = count_words([["one two three"] * 5, ["three four"] * 3, ["five 中文"]] * 4, TIKTOKEN_PATTERN)
    assert f"COUNTS {sorted(expected.items())}" in run.stdout
    assert "counting words in one process" in run.stderr


def test_numba_and_rustbpe_stages_write_the_same_tokenizer(tmp_path: Path, small_corpus: list[Path]) -> None:
    """The whole stage, baseline and held-out report included: tokenizer.json byte for byte, same figures."""
    out = {}
    for trainer in ("numba", "rustbpe"):
        cfg = TokenizerConfig(vocab_size=4096, trainer=trainer, heldout_fraction=0.05, require_exact_vocab=True)
        figures = train_tokenizer(cfg, small_corpus, tmp_path / trainer)
        out[trainer] = ((tmp_path / trainer / "tokenizer.json").read_bytes(), figures["heldout"])
    assert out["numba"] == out["rustbpe"]


def test_numba_shortfall_is_filled_or_an_error() -> None:
    from crawl2score.tokenizer.bpe import VocabShortfallError

    ours = train_numba([["tiny corpus"] * 3], 1000, reserved=2)
    theirs = train_rustbpe([["tiny corpus"] * 3], 1000, reserved=2)
    assert ours.tokenizer.to_str() == theirs.tokenizer.to_str() and ours.filler_tokens > 0
    with pytest.raises(VocabShortfallError, match="reached only .* distinct pairs"):
        train_numba([["tiny corpus"] * 3], 1000, reserved=2, require_exact=True)
    assert learn_tokens(Counter(), 10) == ([bytes([b]) for b in range(256)], [0] * 256)  # no text: the bytes


def test_counts_beyond_int32_are_one_line() -> None:
    """The loop keeps positions and word counts in int32; more is a clear stop, not an overflow."""
    from crawl2score.errors import BadInput
    from crawl2score.tokenizer.merge_loop import word_arrays

    with pytest.raises(BadInput, match=r"seen 2,147,483,647 times; .* set tokenizer.byte_budget"):
        word_arrays(Counter({"ab": 2**31 - 1, "cd": 5}))
