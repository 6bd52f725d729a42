"""Word tokenizers for the data stage, in datatrove's `WordTokenizer` shape.

datatrove picks a tokenizer per language (`load_word_tokenizer`), and the default for English is a spaCy
pipeline built per process. Two places need something else:

* MinHash shingles. A spaCy pipeline per document costs ~170 docs/s/core; splitting the already
  simplified text (lower-cased, punctuation removed by `simplify_text`) on whitespace gives the same
  shingles for English at ~7x the speed. Chinese has no spaces, so each CJK character is its own token:
  5-character shingles are the usual choice for Chinese near-duplicate detection (one edit of a two-
  character word touches at most six shingles, like one English word edit touches five).
* Chinese quality filters. datatrove's spaCy "zh" tokenizer needs spaCy's jieba segmenter config and
  returned whole clauses as single tokens here, which breaks word-count rules; jieba itself is reliable.
* Speed of the quality filters. Gopher repetition, Gopher quality and FineWeb each tokenize the same
  document again, and datatrove's spaCy path runs the whole pipeline (with a sentencizer) per call:
  ~11 ms per 2 KB English page, ~85% of the filters' time. `SpacyWordTokenizer` runs only spaCy's
  tokenizer (the same tokens, ~4 ms) and both word tokenizers remember the texts they split last (two
  filter groups), so a page is tokenized once for all filters that see it unchanged. Sentences are split by a regex on
  terminal punctuation, which is what spaCy's rule-based sentencizer does too.
"""

from __future__ import annotations

import re
from collections import OrderedDict

from datatrove.utils.word_tokenizers import WordTokenizer, simple_span_tokenize, strip_strings

# CJK Unified Ideographs (+ extension A, compatibility ideographs), kana and hangul: scripts written without
# spaces between words, so one character is one token for shingling.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_MIXED_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
# Sentence ends for Chinese (full-width) and Latin text; keeps closing quotes with their sentence.
_SENT = re.compile(r"[^。！？!?\.\n]*(?:[。！？!?]+|\.(?=\s|$)|\n|$)[”’」』\"']?")


class ScriptAwareTokenizer(WordTokenizer):
    """Whitespace tokens for spaced scripts, one token per character for CJK. Used for MinHash shingles."""

    def __init__(self) -> None:
        super().__init__(language=None)

    def word_tokenize(self, text: str) -> list[str]:
        if text.isascii():  # no CJK: the regex reduces to str.split (same whitespace set), 3-4x faster
            return text.split()
        return _MIXED_TOKEN.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return strip_strings(_SENT.findall(text))

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return list(simple_span_tokenize(text, self.sent_tokenize(text)))


class _LastTextCache(WordTokenizer):
    """Remembers the tokens of the texts it split last: the filters after it tokenize an unchanged page once.

    The filters take pages in groups (`FILTER_BATCH` = 64 in steps.py), so one filter splits a whole
    group before the next sees its first page: the cache holds two groups, and at most `MAX_CHARS`
    characters of text so a group of huge pages cannot pin gigabytes of tokens.
    """

    MAX_TEXTS = 128
    MAX_CHARS = 4_000_000

    def __init__(self, language: str | None) -> None:
        super().__init__(language)
        self._cache: OrderedDict[str, list[str]] = OrderedDict()
        self._chars = 0

    def word_tokenize(self, text: str) -> list[str]:
        tokens = self._cache.get(text)
        if tokens is not None:
            self._cache.move_to_end(text)
            return list(tokens)
        tokens = self._tokenize(text)
        self._cache[text] = tokens
        self._chars += len(text)
        while len(self._cache) > self.MAX_TEXTS or (self._chars > self.MAX_CHARS and len(self._cache) > 1):
            old, _ = self._cache.popitem(last=False)
            self._chars -= len(old)
        return list(tokens)

    def _tokenize(self, text: str) -> list[str]:
        raise NotImplementedError

    def sent_tokenize(self, text: str) -> list[str]:
        return strip_strings(_SENT.findall(text))

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return list(simple_span_tokenize(text, self.sent_tokenize(text)))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": OrderedDict(), "_chars": 0, "_nlp": None}


class SpacyWordTokenizer(_LastTextCache):
    """spaCy's rule-based tokenizer alone (no pipeline).

    datatrove tokenizes inside `memory_zone()` so the vocab cannot grow without bound, but that discards
    spaCy's lexeme cache on every call and makes tokenizing ~10x slower. We keep the cache and start a
    fresh tokenizer every `reset_every` documents instead, which bounds memory the same way.
    """

    def __init__(self, language: str = "en", reset_every: int = 20_000) -> None:
        super().__init__(language)
        self.reset_every = reset_every
        self._nlp = None
        self._calls = 0

    def _tokenize(self, text: str) -> list[str]:
        self._calls += 1
        if self._nlp is None or self._calls % self.reset_every == 0:
            import spacy

            self._nlp = spacy.blank(self.language)
        self._nlp.max_length = len(text) + 10
        return strip_strings([t.text for t in self._nlp.tokenizer(text)])  # as datatrove's SpaCyTokenizer


class RegexWordTokenizer(_LastTextCache):
    """Words for the quality filters by one regex: runs of word characters (joined across an inner
    apostrophe, hyphen or period: "don't", "e-mail", "3.5"), and runs of other non-space characters.

    Why: spaCy's tokenizer was ~60% of the data stage's CPU on real pages once extraction was fast
    (1.2 MB of English text: 1.65 CPU-s, this regex 0.05 s). The counts the Gopher, C4 and FineWeb rules
    use (words, alphabetic words, stop words, mean word length, repeated n-grams) come out nearly the same:
    token counts within 1% (median per page), and the same pages kept on the sample and all but 2 of 139
    real pages (BENCHMARKS.md, "HTML extraction"). spaCy differs mainly in splitting clitics ("do", "n't").
    """

    _WORD = re.compile(r"\w+(?:['’.\-]\w+)*|[^\w\s]+")

    def __init__(self, language: str = "en") -> None:
        super().__init__(language)

    def _tokenize(self, text: str) -> list[str]:
        return self._WORD.findall(text)


class JiebaWordTokenizer(_LastTextCache):
    """Chinese words via jieba (dictionary ships in its wheel, works offline); sentences split on 。！？."""

    def __init__(self) -> None:
        super().__init__(language="zh")

    def _tokenize(self, text: str) -> list[str]:
        import jieba

        return [t for t in jieba.lcut(text) if t.strip()]


def quiet_jieba() -> None:
    """jieba prints its dictionary-loading banner at INFO on stderr in every worker; keep logs readable."""
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)


def quality_tokenizer(kind: str, language: str = "en") -> WordTokenizer:
    """The word tokenizer of the quality filters for spaced languages: "regex" or "spacy"."""
    if kind == "regex":
        return RegexWordTokenizer(language)
    if kind == "spacy":
        return SpacyWordTokenizer(language)
    raise ValueError(f"unknown quality tokenizer {kind!r}")


def minhash_tokenizer(kind: str) -> WordTokenizer | str:
    """The MinHash word tokenizer named in config: "whitespace" (script-aware) or "spacy" (datatrove's)."""
    if kind == "whitespace":
        return ScriptAwareTokenizer()
    if kind == "spacy":
        return "en"
    raise ValueError(f"unknown minhash tokenizer {kind!r}")
