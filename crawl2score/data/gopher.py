"""Gopher's quality and repetition rules with datatrove's decisions, computed faster.

Quality (`CountedGopherQualityFilter`): the rules counted once per distinct word.

datatrove's `GopherQualityFilter` tests each word occurrence in Python generator expressions (is it all
punctuation, has it a letter), which made it the stage's most expensive filter after the order change
that runs it first: on the real Common Crawl sample, 0.46 s for 139 pages, most of it on four 130-340
thousand character pages. A page's words repeat (a 60,000-word page has a few thousand distinct ones), so
testing each distinct word once and weighting it by its count gives the same sums at a fraction of the
cost. The rules, their order and thresholds are datatrove's own (the object *is* datatrove's filter, only
`filter` is replaced); `tests/data/test_gopher.py` checks the same result on every sample page, every real
page and generated text. Integer sums are exact, so the mean word length is bit-identical to `np.mean`.

Repetition (`CountedGopherRepetitionFilter`): datatrove builds every word n-gram as a new string in Python
(`" ".join` for the top 2-4-grams, `"".join` for the duplicated 5-10-grams), nine passes over the words of
each page that passes the quality rules; after the quality filter became cheap and batched this was the
largest filter on the real pages (0.19 of 1.22 CPU-s, most of it one 151 k-character page). Here:

* top n-grams: counted as word tuples by `Counter(zip(...))` (C speed). `" ".join` maps n-word tuples
  one to one onto strings when no word holds a space, so the counts, the first-seen order that breaks ties
  in `most_common(1)` and the answer are the same; a page with a spaced word takes datatrove's path.
* duplicated n-grams: slices of the page's words joined once, instead of a join per position. datatrove's
  greedy scan (a repeated n-gram counts and skips its n words) only runs when its count could pass the
  threshold: it counts later occurrences only, so the characters of all later occurrences (all n-grams'
  minus the distinct ones', two C-speed sums) bound it; a page under that bound keeps its verdict.
"""

from __future__ import annotations

import itertools
from collections import Counter

from datatrove.data import Document
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates, find_top_duplicate, get_n_grams
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
    return word.isalpha() or any(c.isalpha() for c in word)  # most words are all letters: one C call


class CountedGopherRepetitionFilter(GopherRepetitionFilter):
    """datatrove's Gopher repetition filter with the n-gram rules computed faster (see the module doc)."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
        if not text:
            return False, "empty"

        paragraphs = self.paragraph_exp.split(text.strip())
        paragraphs_duplicates, char_duplicates = find_duplicates(paragraphs)
        if self.dup_para_frac and paragraphs_duplicates / len(paragraphs) > self.dup_para_frac:
            return False, "dup_para_frac"
        if self.dup_para_char_frac and char_duplicates / len(text) > self.dup_para_char_frac:
            return False, "dup_para_char_frac"

        lines = self._line_splitter.split(text)
        line_duplicates, char_duplicates = find_duplicates(lines)
        if self.dup_line_frac and line_duplicates / len(lines) > self.dup_line_frac:
            return False, "dup_line_frac"
        if self.dup_line_char_frac and char_duplicates / len(text) > self.dup_line_char_frac:
            return False, "dup_line_char_frac"

        words = split_into_words(text, self.language)
        joined = "".join(words)
        spaced = " " in joined  # some word holds a space
        for n, n_frac in self.top_n_grams:
            if len(words) < n:
                continue
            top_chars = _top_duplicate_chars(words, n) if not spaced else find_top_duplicate(get_n_grams(words, n))
            if top_chars / len(text) > n_frac:
                return False, f"top_{n}_gram"

        offsets = list(itertools.accumulate(map(len, words), initial=0))
        for n, n_frac in self.dup_n_grams:
            grams = [joined[a:b] for a, b in zip(offsets, offsets[n:], strict=False)]
            # Every n-gram the scan counts is a later occurrence of its string, so the scan's count is at
            # most the characters of all later occurrences: under the threshold, the scan cannot pass it.
            bound = sum(map(len, grams)) - sum(map(len, set(grams)))
            if bound / len(text) > n_frac and _repeated_chars(grams, n) / len(text) > n_frac:
                return False, f"duplicated_{n}_n_grams"
        return True


def _top_duplicate_chars(words: list[str], n: int) -> int:
    """Characters of the most frequent n-gram (joined by spaces) times its count; first seen wins a tie."""
    counts = Counter(zip(*(itertools.islice(words, i, None) for i in range(n)), strict=False))
    gram, count = counts.most_common(1)[0]
    return (sum(map(len, gram)) + n - 1) * count


def _repeated_chars(grams: list[str], n: int) -> int:
    """datatrove's `find_all_duplicate` on the page's n-grams: a repeated one counts and skips its n words."""
    seen: set[str] = set()
    repeated, idx, end = 0, 0, len(grams)
    while idx < end:
        gram = grams[idx]
        if gram in seen:
            repeated += len(gram)
            idx += n
        else:
            seen.add(gram)
            idx += 1
    return repeated
