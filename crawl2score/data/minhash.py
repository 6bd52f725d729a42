"""MinHash signatures: datatrove's `MinhashDedupSignature` with a faster, identical text simplification.

Profiling the signature step with the whitespace tokenizer (BENCHMARKS.md, data section) showed that ~40%
of its CPU time is datatrove's `simplify_text`, and nearly all of that is its last operation, diacritics
removal: `"".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")`, a
Python generator and one `unicodedata.category` call per character; next comes punctuation → space
(`str.translate` with a dict) followed by a whitespace-collapsing regex. `simplify_text` below does the
same operations in the same order but removes the marks with one compiled regex (its character class is
built from `unicodedata` itself, so it is the same set of characters for the running Python), skips that
step for ASCII text (NFD leaves it unchanged and it has no marks), and replaces punctuation and collapses
whitespace in one regex pass. ~1.5-2x faster; shingles and signatures are identical to datatrove's
(tested against it), and the step writes the same files.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from functools import lru_cache

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets, MinhashDedupSignature
from datatrove.utils.text import (
    DEF_TEXT_NORM_CONFIG,
    MONTHS_PATTERN,
    NUMBERS_PATTERN,
    PUNCTUATION,
    PUNCTUATION_TRANS,
    WEEKDAYS_PATTERN,
    WHITESPACE_PATTERN,
    TextNormConfig,
    ngrams,
)

_PUNCT_OR_SPACE = re.compile(f"[{re.escape(PUNCTUATION)}\\s]+")


def _class(codepoints: list[int]) -> str:
    """A regex character class body (ranges) for sorted code points."""
    ranges, start, prev = [], None, None
    for cp in codepoints:
        if start is None:
            start = cp
        elif cp != prev + 1:
            ranges.append(f"{re.escape(chr(start))}-{re.escape(chr(prev))}")
            start = cp
        prev = cp
    if start is not None:
        ranges.append(f"{re.escape(chr(start))}-{re.escape(chr(prev))}")
    return "".join(ranges)


@lru_cache(1)
def _nonspacing_marks() -> re.Pattern[str]:
    """A regex matching runs of category-Mn characters, per this Python's `unicodedata` (built once, ~0.2 s).

    `re` compiles a class of BMP characters into a bitmap, but one that also holds astral characters into
    a list of ranges tried one by one (~300 ns per character here); so the astral marks are a second
    class, only tried after a one-range check that the character is astral.
    """
    marks = [cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Mn"]
    bmp, astral = [cp for cp in marks if cp < 0x10000], [cp for cp in marks if cp >= 0x10000]
    return re.compile(f"(?:[{_class(bmp)}]|(?=[\U00010000-\U0010ffff])[{_class(astral)}])+")


def simplify_text(text: str, config: TextNormConfig = DEF_TEXT_NORM_CONFIG) -> str:
    """`datatrove.utils.text.simplify_text`, same result; diacritics removal without a per-character loop."""
    if config.lowercase:
        text = text.lower()
    if config.norm_numbers:
        text = NUMBERS_PATTERN.sub("0", text)
    if config.norm_weekdays:
        text = WEEKDAYS_PATTERN.sub("WEEKDAY", text)
    if config.norm_monthnames:
        text = MONTHS_PATTERN.sub("MONTH", text)
    if config.remove_punctuation and config.norm_whitespace:
        # translate(punctuation -> " ") then collapse whitespace == one pass over runs of either
        text = _PUNCT_OR_SPACE.sub(" ", text).strip()
    else:
        if config.remove_punctuation:
            text = text.translate(PUNCTUATION_TRANS)
        if config.norm_whitespace:
            text = WHITESPACE_PATTERN.sub(" ", text.strip())
    if config.norm_unicode_diacritics and not text.isascii():
        text = _nonspacing_marks().sub("", unicodedata.normalize("NFD", text))
    return text.strip()


class FastMinhashDedupSignature(MinhashDedupSignature):
    """`MinhashDedupSignature` with the faster `simplify_text` above; same shingles, signatures and files."""

    def get_shingles(self, text: str) -> np.ndarray:
        hash_func = self._hash_func
        words = self.word_tokenizer.word_tokenize(simplify_text(text, self.config.norm_config))
        return np.fromiter(
            [hash_func(" ".join(x)) for x in ngrams(words, self.config.n_grams)], dtype=np.uint64
        ).reshape((-1, 1))


class GroupedMinhashDedupBuckets(MinhashDedupBuckets):
    """`MinhashDedupBuckets` for several buckets per task: task `rank` of `world_size` does buckets
    rank, rank + world_size, ... one after the other, each exactly as datatrove's one-bucket task.

    datatrove needs one task per bucket (14 by default). On a local run each task costs ~30 ms of set-up
    (three loguru sinks, stats, a completion file) for a few ms of work at the sample's size, so with 1
    task the bucket stage was most of the data stage's fixed cost on a small input. Same files, same
    duplicates; on Slurm or Ray with as many tasks as buckets it is datatrove's step.
    """

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        for bucket in range(rank, self.config.num_buckets, world_size):
            super().run(data, bucket, self.config.num_buckets)
