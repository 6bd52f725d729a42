"""Benchmark n-grams: the overlap test shared by the data stage's decontamination filter and the eval
stage's contamination report (`eval/contamination.py`), so both drop / report exactly the same overlaps.

The n-gram test of GPT-3 (Brown et al. 2020, appendix C) and the DeepSeek-V3 decontamination practice:
13-grams of words (lower-cased, punctuation dropped), plus 13-grams of characters over the CJK characters
of a text (Chinese has no spaces). Character n-grams carry a "\\x01" prefix so they never equal a word
n-gram. Standard library only: `crawl2score.data` workers import it without the eval stage.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Hashable, Iterable, Iterator

NGRAM = 13
CJK_PREFIX = "\u0001"
_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def iter_ngrams(text: str, n: int = NGRAM) -> Iterator[str]:
    """Word n-grams of the text in order, then character n-grams of its CJK characters (may repeat)."""
    words = [w.lower() for w in _WORD_RE.findall(text)]
    for i in range(len(words) - n + 1):
        yield " ".join(words[i : i + n])
    cjk = "".join(_CJK_RE.findall(text))
    for i in range(len(cjk) - n + 1):
        yield CJK_PREFIX + cjk[i : i + n]


def ngrams(text: str, n: int = NGRAM) -> set[str]:
    """The set of `iter_ngrams(text, n)`."""
    return set(iter_ngrams(text, n))


def ngram_index(items: Iterable[tuple[Hashable, str]], n: int = NGRAM) -> dict[str, set]:
    """n-gram -> {key} over (key, text) pairs, e.g. key = (benchmark, problem id)."""
    index: dict[str, set] = defaultdict(set)
    for key, text in items:
        for g in iter_ngrams(text, n):
            index[g].add(key)
    return dict(index)


def first_overlap(text: str, index: dict[str, set] | set[str], n: int = NGRAM) -> str | None:
    """The first n-gram of `text` found in `index` (stops there), or None."""
    for g in iter_ngrams(text, n):
        if g in index:
            return g
    return None
