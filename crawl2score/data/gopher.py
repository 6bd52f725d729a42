"""Gopher's quality rules, counted once per distinct word: same decisions as datatrove's filter, faster.

datatrove's `GopherQualityFilter` tests each word occurrence in Python generator expressions (is it all
punctuation, has it a letter), which made it the stage's most expensive filter after the order change
that runs it first: on the real Common Crawl sample, 0.46 s for 139 pages, most of it on four 130-340
thousand character pages. A page's words repeat (a 60,000-word page has a few thousand distinct ones), so
testing each distinct word once and weighting it by its count gives the same sums at a fraction of the
cost. The rules, their order and thresholds are datatrove's own (the object *is* datatrove's filter, only
`filter` is replaced); `tests/data/test_gopher.py` checks the same result on every sample page, every real
page and generated text. Integer sums are exact, so the mean word length is bit-identical to `np.mean`.
"""

from __future__ import annotations

from collections import Counter

from datatrove.data import Document
from datatrove.pipeline.filters import GopherQualityFilter
from datatrove.utils.text import PUNCTUATION_SET, split_into_words


class CountedGopherQualityFilter(GopherQualityFilter):
    """datatrove's Gopher quality filter with per-distinct-word counting (see the module doc)."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
        words = split_into_words(text, self.language)
        n_words = len(words)
        counts = Counter(words)
        # words with at least one character that is not punctuation, and their occurrences
        worded = [w for w in counts if not PUNCTUATION_SET.issuperset(w)]
        n_worded = sum(counts[w] for w in worded)

        if self.min_doc_words and n_worded < self.min_doc_words:
            return False, "gopher_short_doc"
        if self.max_doc_words and n_worded > self.max_doc_words:
            return False, "gopher_long_doc"

        # mean length of those words; nan without any, as np.mean of an empty list (no rule then fires)
        mean_len = sum(len(w) * counts[w] for w in worded) / n_worded if n_worded else float("nan")
        if self.min_avg_word_length and mean_len < self.min_avg_word_length:
            return False, "gopher_below_avg_threshold"
        if self.max_avg_word_length and mean_len > self.max_avg_word_length:
            return False, "gopher_above_avg_threshold"

        if self.max_symbol_word_ratio and text.count("#") / n_words > self.max_symbol_word_ratio:
            return False, "gopher_too_many_hashes"
        if self.max_symbol_word_ratio and (text.count("...") + text.count("…")) / n_words > self.max_symbol_word_ratio:
            return False, "gopher_too_many_ellipsis"

        lines = text.splitlines()
        if self.max_bullet_lines_ratio:
            bullets = sum(s.lstrip().startswith(("•", "-")) for s in lines)
            if bullets / len(lines) > self.max_bullet_lines_ratio:
                return False, "gopher_too_many_bullets"
        if self.max_ellipsis_lines_ratio:
            ellipses = sum(s.rstrip().endswith(("...", "…")) for s in lines)
            if ellipses / len(lines) > self.max_ellipsis_lines_ratio:
                return False, "gopher_too_many_end_ellipsis"

        if self.max_non_alpha_words_ratio:
            alpha = sum(n for w, n in counts.items() if _has_letter(w))
            if alpha / n_words < self.max_non_alpha_words_ratio:
                return False, "gopher_below_alpha_threshold"

        if self.min_stop_words and len(self.stop_words.intersection(counts)) < self.min_stop_words:
            return False, "gopher_enough_stop_words"
        return True


def _has_letter(word: str) -> bool:
    return any(c.isalpha() for c in word)
