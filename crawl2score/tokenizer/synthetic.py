"""A generated English + Chinese corpus in datatrove's JSONL layout, for tests and benchmarks.

Real text cannot be downloaded on CI machines, yet the exact-102,400 check needs a corpus with well over
100k distinct mergeable pairs. Word frequencies here follow Zipf's law over large invented lexicons
(syllable-built "English", character-built "Chinese"), with digits, punctuation, emoji, URLs and code lines
mixed in, so BPE sees the same kinds of structure as on web text. Seeded: the same call gives the same bytes.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_ONSETS = (
    "b c d f g h j k l m n p r s t v w y z bl br ch cl cr dr fl fr gl gr pl pr sc sh sk sl sp st str th tr wh".split()
)
_VOWELS = "a e i o u ai ea ee ie oa oo ou".split()
_CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "ng", "nt", "rt", "st", "ck", "ght"]
_FUNCTION_WORDS = "the of and to a in is that for it as was with on be by this are from or at an not".split()
_EMOJI = ["😀", "🚀", "👍", "🎉", "❤️", "🇨🇳", "👩‍💻", "🤔"]
_ZH_PUNCT = ["，", "。", "、", "！", "？", "：", "；"]
_EN_PUNCT = [",", ".", ";", ":", "!", "?", " -", "'s"]


def _zipf_sampler(rng: np.random.Generator, n: int, a: float = 1.07):
    cdf = np.cumsum(1.0 / np.arange(1, n + 1) ** a)
    cdf /= cdf[-1]
    return lambda k: np.minimum(np.searchsorted(cdf, rng.random(k)), n - 1)


class _Generator:
    def __init__(self, seed: int, en_words: int = 150_000, zh_words: int = 100_000) -> None:
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        sylls = [o + v + c for o in _ONSETS for v in _VOWELS for c in _CODAS]
        lens = rng.integers(1, 5, en_words)
        picks = rng.integers(0, len(sylls), (en_words, 4))
        words = {"".join(sylls[j] for j in row[:n]) for row, n in zip(picks, lens, strict=True)}
        content = sorted(words)
        rng.shuffle(content)
        self.en = _FUNCTION_WORDS + content
        # Common characters of the CJK Unified block, ranked by a random permutation.
        chars = [chr(c) for c in range(0x4E00, 0x4E00 + 6000)]
        char_rank = _zipf_sampler(rng, len(chars), 0.9)
        lens = rng.integers(1, 5, zh_words)
        flat = char_rank(int(lens.sum()))
        out, pos = set(), 0
        for n in lens:
            out.add("".join(chars[j] for j in flat[pos : pos + n]))
            pos += n
        self.zh = sorted(out)
        rng.shuffle(self.zh)
        self.en_pick = _zipf_sampler(rng, len(self.en))
        self.zh_pick = _zipf_sampler(rng, len(self.zh))

    def _number(self) -> str:
        return str(int(self.rng.integers(0, 10 ** int(self.rng.integers(1, 9)))))

    def english(self, n_words: int) -> str:
        rng = self.rng
        idx = self.en_pick(n_words)
        parts: list[str] = []
        cap = True
        for i, w in enumerate(idx):
            word = self.en[w]
            if cap:
                word = word.capitalize()
                cap = False
            r = rng.random()
            if r < 0.03:
                word = f"{word} {self._number()}"
            elif r < 0.035:
                word = f"https://{self.en[idx[i - 1]]}.example.org/{word}"
            elif r < 0.038:
                word = f"{word} {_EMOJI[int(rng.integers(len(_EMOJI)))]}"
            parts.append(word)
            if r > 0.88:
                p = _EN_PUNCT[int(rng.integers(len(_EN_PUNCT)))]
                parts[-1] += p
                cap = p in (".", "!", "?")
            if r > 0.995:
                parts[-1] += "\n\n"
        if rng.random() < 0.1:
            parts.append(f"\n\n    def {self.en[idx[0]]}(x):\n        return x * {self._number()}\n")
        return " ".join(parts).replace("\n ", "\n") + "."

    def chinese(self, n_words: int) -> str:
        rng = self.rng
        idx = self.zh_pick(n_words)
        parts: list[str] = []
        for w in idx:
            parts.append(self.zh[w])
            r = rng.random()
            if r < 0.1:
                parts.append(_ZH_PUNCT[int(rng.integers(len(_ZH_PUNCT)))])
            elif r < 0.12:
                parts.append(self._number())
            elif r < 0.13:
                parts.append(" " + self.en[int(self.en_pick(1)[0])] + " ")
            elif r < 0.134:
                parts.append("\n")
        return "".join(parts) + "。"


def generate_documents(total_bytes: int, seed: int = 0, zh_fraction: float = 0.4) -> Iterator[dict]:
    """Datatrove-style records ({text, id, metadata.language}) until `total_bytes` of UTF-8 text."""
    gen = _Generator(seed)
    made, i = 0, 0
    while made < total_bytes:
        if gen.rng.random() < zh_fraction:
            text, lang = gen.chinese(int(gen.rng.integers(50, 1500))), "zh"
        else:
            text, lang = gen.english(int(gen.rng.integers(50, 1500))), "en"
        made += len(text.encode("utf-8"))
        yield {"text": text, "id": f"synthetic/{seed}/{i}", "metadata": {"language": lang}}
        i += 1


def write_corpus(
    out_dir: str | os.PathLike[str], total_bytes: int, files: int = 2, seed: int = 0, compress: bool = True
) -> list[Path]:
    """Write the generated corpus round-robin into `files` datatrove JSONL(.gz) files; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".jsonl.gz" if compress else ".jsonl"
    paths = [out / f"{i:05d}{suffix}" for i in range(files)]
    # Level 1: compression here only saves disk; the benchmark measures our reading, not gzip -9.
    handles = [gzip.open(p, "wt", encoding="utf-8", compresslevel=1) if compress else open(p, "w") for p in paths]
    try:
        for i, rec in enumerate(generate_documents(total_bytes, seed)):
            handles[i % files].write(json.dumps(rec, ensure_ascii=False) + "\n")
    finally:
        for h in handles:
            h.close()
    return paths
