"""Counting pre-tokens ("words") for the numba trainer, on several processes.

Kept apart from `merge_loop.py` so a counting process imports only `regex` and numpy (not numba). Python's
`regex` module splits with our pattern as fancy-regex (rustbpe, tiktoken) and HF's Split do (tests pin the
three together), at ~15 MB/s on one core here: faster than rustbpe's own counting on two. It holds the GIL
while it matches, so the second core needs a second process, not a thread (BENCHMARKS.md).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import re
from collections import Counter, deque
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import cache

import numpy as np
import regex

log = logging.getLogger("crawl2score.tokenizer")


# A character in one of these classes is assigned (categories L, M, N, P, S) or white space.
_ASSIGNED = r"[\p{L}\p{M}\p{N}\p{P}\p{S}\s]"


@cache
def _newer_characters() -> tuple[tuple[int, int], ...]:
    """The code points `regex` knows as assigned and the encoder does not, as inclusive ranges.

    `regex` follows the newest Unicode; fancy-regex (tiktoken, the shard encoder; rustbpe) and Oniguruma (HF)
    an older one that they share (test_encode.py). Characters assigned since then are letters or symbols to
    `regex` and the unassigned "gap" to the encoder. Found by asking both engines about every code point
    (~0.3 s, once per process), so no Unicode version is written down here to go stale. tiktoken with the
    256 bytes as its only tokens returns exactly the text its pattern matched.
    """
    import tiktoken

    everything = "".join(map(chr, itertools.chain(range(0xD800), range(0xE000, 0x110000))))
    runs = regex.compile(_ASSIGNED + "+", flags=regex.V1)
    encoder = tiktoken.Encoding(
        "assigned", pat_str=runs.pattern, mergeable_ranks={bytes([b]): b for b in range(256)}, special_tokens={}
    )
    newer = set("".join(runs.findall(everything))) - set(bytes(encoder.encode_ordinary(everything)).decode())
    spans: list[list[int]] = []
    for c in sorted(map(ord, newer)):
        if spans and spans[-1][1] == c - 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    return tuple((a, b) for a, b in spans)


@dataclass(frozen=True)
class Splitter:
    """`pattern` (fancy-regex syntax) for `regex`, splitting as the encoder does.

    `exact` takes the newer characters (`newer`: inclusive code point ranges) out of each \\p{..} class,
    which makes `regex` ~3.5x slower, so only a text that has one of them is split with it; the others get
    `pattern` as it is. Looking for them with a regex set costs more than the split itself; a table lookup
    over the text's code points costs ~3%. Plain data, so a counting process gets it pickled.
    """

    pattern: str
    exact: str
    newer: tuple[tuple[int, int], ...]

    def split(self, text: str) -> list[str]:
        if self.newer and not text.isascii():
            code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
            if _table(self.newer)[code_points].any():
                return _compiled(self.exact).findall(text)
        return _compiled(self.pattern).findall(text)


@cache
def _table(spans: tuple[tuple[int, int], ...]) -> np.ndarray:
    table = np.zeros(0x110000, np.bool_)
    for a, b in spans:
        table[a : b + 1] = True
    return table


@cache
def splitter(pattern: str) -> Splitter:
    newer = _newer_characters()
    if not newer:
        return Splitter(pattern, pattern, ())
    members = "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in newer)
    exact = re.sub(r"\\p\{(\w+)\}", lambda m: f"[{m.group(0)}--[{members}]]", pattern)
    return Splitter(pattern, exact, newer)


@cache
def _compiled(pattern: str) -> regex.Pattern:
    # V1: the pattern's [[..]&&[..]] is a set intersection (fancy-regex syntax); V0 reads it as a literal.
    # (?-f): simple case folding for (?i:...), as fancy-regex does; V1 defaults to full folding.
    return regex.compile("(?-f)" + pattern, flags=regex.V1)


def _count(texts: list[str], split: Splitter) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(split.split(text))
    return counts


def count_batch(texts: list[str], pattern: str) -> Counter[str]:
    """How often each piece of `pattern` (the encoder's, fancy-regex syntax) occurs in `texts`."""
    return _count(texts, splitter(pattern))


def count_words(batches: Iterable[list[str]], pattern: str, workers: int = 1) -> Counter[str]:
    """How often each pre-token occurs in all batches; `workers` > 1 counts batches in that many processes.

    Processes are spawned, not forked: the caller may be a Prefect worker with threads of its own. At most
    two batches per process are in flight, so memory stays a few batches whatever the corpus size. Spawning
    imports the caller's main script again; one without an `if __name__ == "__main__":` guard breaks the
    pool, and the counting then goes on in this process (same counts, one core) with a warning.
    """
    total: Counter[str] = Counter()
    split = splitter(pattern)  # here, once: the processes get it worked out
    batches = iter(batches)
    first = next(batches, None)
    if first is not None:  # a corpus of one batch is counted here: starting processes would cost more
        second = next(batches, None)
        batches = itertools.chain([first] if second is None else [first, second], batches)
        workers = workers if second is not None else 1
    if workers > 1:
        pending: deque[tuple[list[str], Future[Counter[str]]]] = deque()
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for batch in batches:
                    pending.append((batch, pool.submit(_count, batch, split)))
                    while len(pending) > 2 * workers or (pending and pending[0][1].done()):
                        total.update(pending[0][1].result())
                        pending.popleft()
                while pending:
                    total.update(pending[0][1].result())
                    pending.popleft()
        except BrokenProcessPool as exc:
            log.warning(
                "tokenizer: counting words in one process: the counting processes failed (%s); a script that "
                'runs the tokenizer needs `if __name__ == "__main__":` around its code',
                exc,
            )
            for batch, _ in pending:
                total.update(_count(batch, split))
    for batch in batches:
        total.update(_count(batch, split))
    return total
