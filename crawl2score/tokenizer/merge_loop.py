"""BPE's merge loop, compiled with Numba: rustbpe's merges (the same, in the same order), 2.5x as fast.

Why by hand: BPE training is a count phase and a merge loop, and on our corpus the merge loop is most of
the time (BENCHMARKS.md, issue 14). The trainers on PyPI (`tokenizers`, rustbpe and its forks) keep, for each
pair, the *words* it occurs in, and rewrite each such word whole for every merge that touches it. A Chinese
pre-token is a whole run of ideographs (73 bytes on average, nearly all seen once), and the first merges,
the bytes inside CJK characters, touch nearly all of them: rustbpe spends 4 s of its 8 on its first 1,700
merges. Here a pair keeps its *positions*: a merge visits only where the pair occurs, relinks the neighbours
and adds the two new pairs' positions, so it costs what it changes. Positions of a pair are stored in
contiguous runs (one per merge step that added some), not a linked list per position, which memory
latency made 2.4x slower here (BENCHMARKS.md, run N).

Semantics are rustbpe's, so the output is identical (tests compare them): ids are the 256 bytes, then 256 +
merge index; the next merge is the pair of highest count, ties to the smallest (left, right); a merge
applies left to right without overlap within a word; counts are weighted by the word's count; training
stops after `n_merges` or when no pair occurs. Stale positions are skipped by checking the symbols, which
only ever change to new, larger ids, so a position never matches a pair it left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
import time
from collections import Counter
from pathlib import Path

import numba as nb
import numpy as np

from crawl2score.errors import BadInput

log = logging.getLogger("crawl2score.tokenizer")


def _cache_somewhere() -> None:
    """Numba caches compiled code in NUMBA_CACHE_DIR when set, else beside this file, else in the user's
    cache folder (~/.cache/numba). Where none of them can be written (a read-only install run by a user
    without a writable home) it refuses to import the module at all; a folder of our own in the system's
    temporary directory serves instead."""
    from numba.core.caching import FunctionCache

    try:
        FunctionCache(_cache_somewhere)  # what `cache=True` does at decoration, for a function of this file
    except RuntimeError:  # "cannot cache function ...: no locator available"
        folder = _private_folder()
        os.environ["NUMBA_CACHE_DIR"] = str(folder)
        nb.core.config.reload_config()
        log.warning("tokenizer: no writable folder for Numba's cache (beside %s, the home); using %s", __file__, folder)


def _private_folder() -> Path:
    """`crawl2score-numba-<uid>` in the temporary directory if it is this user's own folder and nobody
    else may write to it, else a new one: Numba reads its cache index with pickle, so a folder another
    user made first would run their code as ours."""
    folder = Path(tempfile.gettempdir()) / f"crawl2score-numba-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    info = folder.lstat()
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022:
        return folder
    return Path(tempfile.mkdtemp(prefix="crawl2score-numba-"))


_cache_somewhere()

SHIFT = 32  # a pair (a, b) is the int64 a << 32 | b: one key, ordered as the tuple
LOW = (1 << SHIFT) - 1
_GOLDEN = np.uint64(11400714819323198485)  # Fibonacci hashing: 2^64 / golden ratio
SYM, NXT, PRV, WT, PAIR = 0, 1, 2, 3, 4  # per position: its symbol, next and previous live position, its
# word's count, and the id of the pair it starts (-1 at a word's end): one row, so a visit costs one cache miss
COLUMNS = 5


@nb.njit(cache=True, nogil=True, inline="always")
def _slot(keys: np.ndarray, key: int, bits: int) -> int:
    """Open addressing, linear probing: the slot holding `key`, or the empty one where it goes."""
    mask = (1 << bits) - 1
    h = np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(64 - bits))
    while True:
        k = keys[h]
        if k == key or k == -1:
            return h
        h = (h + 1) & mask


@nb.njit(cache=True, nogil=True)
def _rehash(pair_key: np.ndarray, n_pairs: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    keys = np.full(1 << bits, -1, np.int64)
    ids = np.empty(1 << bits, np.int32)
    for i in range(n_pairs):
        h = _slot(keys, pair_key[i], bits)
        keys[h] = pair_key[i]
        ids[h] = i
    return keys, ids


@nb.njit(cache=True, nogil=True, inline="always")
def _before(c1: int, k1: int, c2: int, k2: int) -> bool:
    """Heap order: higher count first, then the smaller pair (rustbpe's tie-break)."""
    return c1 > c2 or (c1 == c2 and k1 < k2)


@nb.njit(cache=True, nogil=True)
def _push(counts: np.ndarray, keys: np.ndarray, size: int, c: int, k: int) -> int:
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if not _before(c, k, counts[parent], keys[parent]):
            break
        counts[i], keys[i] = counts[parent], keys[parent]
        i = parent
    counts[i], keys[i] = c, k
    return size + 1


@nb.njit(cache=True, nogil=True)
def _pop(counts: np.ndarray, keys: np.ndarray, size: int) -> int:
    size -= 1
    c, k = counts[size], keys[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and _before(counts[child + 1], keys[child + 1], counts[child], keys[child]):
            child += 1
        if not _before(counts[child], keys[child], c, k):
            break
        counts[i], keys[i] = counts[child], keys[child]
        i = child
    counts[i], keys[i] = c, k
    return size


@nb.njit(cache=True, nogil=True)
def _byte_pairs(pos: np.ndarray, bits: int):
    """The byte pairs (at most 65,536): ids, weighted counts, and their positions grouped by pair, ascending."""
    n = pos.shape[0]
    keys = np.full(1 << bits, -1, np.int64)
    ids = np.empty(1 << bits, np.int32)
    pair_key = np.empty(1 << 16, np.int64)
    pair_count = np.zeros(1 << 16, np.int64)
    pair_of = np.full(n, -1, np.int32)
    n_pairs = 0
    for p in range(n):
        q = pos[p, NXT]
        if q == -1:
            continue
        key = (np.int64(pos[p, SYM]) << SHIFT) | pos[q, SYM]
        h = _slot(keys, key, bits)
        if keys[h] == -1:
            keys[h], ids[h], pair_key[n_pairs] = key, n_pairs, key
            n_pairs += 1
        pair_of[p] = ids[h]
        pos[p, PAIR] = ids[h]
        pair_count[ids[h]] += pos[p, WT]
    start = np.zeros(n_pairs + 1, np.int64)
    for p in range(n):
        if pair_of[p] >= 0:
            start[pair_of[p] + 1] += 1
    for i in range(n_pairs):
        start[i + 1] += start[i]
    fill = start[:-1].copy()
    occ = np.empty(start[n_pairs], np.int32)
    for p in range(n):
        i = pair_of[p]
        if i >= 0:
            occ[fill[i]] = p
            fill[i] += 1
    return keys, ids, pair_key[:n_pairs].copy(), pair_count[:n_pairs].copy(), start, occ


@nb.njit(cache=True, nogil=True)
def _apply(
    pos,
    where,
    k,
    a,
    b,
    new,
    keys,
    ids,
    bits,
    pair_key,
    pair_count,
    head,
    stamp,
    n_pairs,
    step,
    new_pair,
    new_pos,
    touched,
):
    """Merge (a, b) -> new at those of the k candidate positions where it still occurs.

    Counts change by the word's weight: -(left, a), -(a, b), -(b, right), +(left, new), +(new, right). The
    new pairs' positions go to new_pair/new_pos, and each pair touched once to `touched`.
    Returns (n_pairs, len(new_pos), len(touched)).
    """
    n_new = 0
    n_touched = 0
    ab = ids[_slot(keys, (np.int64(a) << SHIFT) | b, bits)]
    for j in range(k):
        p = where[j]
        if pos[p, SYM] != a:
            continue
        q = pos[p, NXT]
        if q == -1 or pos[q, SYM] != b:
            continue
        w = pos[p, WT]
        left = pos[p, PRV]
        right = pos[q, NXT]
        pair_count[ab] -= w
        if left != -1:
            pair_count[pos[left, PAIR]] -= w
        if right != -1:
            pair_count[pos[q, PAIR]] -= w
            pos[right, PRV] = p
        else:
            pos[p, PAIR] = -1
        pos[p, SYM] = new
        pos[p, NXT] = right
        pos[q, SYM] = -1
        for side in range(2):
            if side == 0:
                if left == -1:
                    continue
                x = left
                key = (np.int64(pos[left, SYM]) << SHIFT) | new
            else:
                if right == -1:
                    continue
                x = p
                key = (np.int64(new) << SHIFT) | pos[right, SYM]
            h = _slot(keys, key, bits)
            if keys[h] == -1:
                keys[h], ids[h], pair_key[n_pairs] = key, n_pairs, key
                pair_count[n_pairs] = 0
                stamp[n_pairs] = -1
                head[n_pairs] = -1
                n_pairs += 1
            i = ids[h]
            pair_count[i] += w
            pos[x, PAIR] = i
            new_pair[n_new], new_pos[n_new] = i, x
            n_new += 1
            if stamp[i] != step:
                stamp[i] = step
                touched[n_touched] = i
                n_touched += 1
    return n_pairs, n_new, n_touched


@nb.njit(cache=True, nogil=True)
def _store(new_pair, new_pos, n_new, touched, n_touched, local, occ, end, head, run_start, run_len, run_next, n_runs):
    """The step's new positions as one contiguous run per touched pair (counting sort), put first in its list."""
    for i in range(n_touched):
        local[touched[i]] = i
    offset = np.zeros(n_touched + 1, np.int64)
    for j in range(n_new):
        offset[local[new_pair[j]] + 1] += 1
    for i in range(n_touched):
        offset[i + 1] += offset[i]
    for i in range(n_touched):
        pair = touched[i]
        run_start[n_runs] = end + offset[i]
        run_len[n_runs] = offset[i + 1] - offset[i]
        run_next[n_runs] = head[pair]
        head[pair] = n_runs
        n_runs += 1
    for j in range(n_new):
        i = local[new_pair[j]]
        occ[end + offset[i]] = new_pos[j]
        offset[i] += 1
    return end + n_new, n_runs


@nb.njit(cache=True, nogil=True)
def _gather(pair, head, run_start, run_len, run_next, occ, where):
    k = 0
    r = head[pair]
    while r != -1:
        s = run_start[r]
        for j in range(run_len[r]):
            where[k] = occ[s + j]
            k += 1
        r = run_next[r]
    return k


@nb.njit(cache=True, nogil=True)
def _room(a: np.ndarray, need: int) -> np.ndarray:
    """`a`, or a copy at least twice as long: growth happens between merge steps, never inside one (a
    reassigned array inside the hot loop made it 3x slower)."""
    if a.shape[0] >= need:
        return a
    grown = np.empty(max(need, 2 * a.shape[0]), a.dtype)
    grown[: a.shape[0]] = a
    return grown


@nb.njit(cache=True, nogil=True)
def train_merges(symbols: np.ndarray, word_end: np.ndarray, weight: np.ndarray, n_merges: int) -> np.ndarray:
    """The merges (left id, right id) in order, at most n_merges, of words given flat.

    symbols: the words' bytes one after the other (int32); word_end: True at each word's last byte; weight:
    at each byte, the count of its word (int32).
    """
    n = symbols.shape[0]
    pos = np.empty((n, COLUMNS), np.int32)
    for p in range(n):
        pos[p, SYM] = symbols[p]
        pos[p, NXT] = -1 if word_end[p] else p + 1
        pos[p, PRV] = -1 if (p == 0 or word_end[p - 1]) else p - 1
        pos[p, WT] = weight[p]
        pos[p, PAIR] = -1
    bits = 17
    keys, ids, pair_key, pair_count, start, occ = _byte_pairs(pos, bits)
    n_pairs = pair_key.shape[0]
    # a pair's positions: a linked list of runs in `occ`; the byte pairs start with one run each
    head = np.arange(n_pairs).astype(np.int32)
    run_start = start[:-1].copy()
    run_len = start[1:] - start[:-1]
    run_next = np.full(n_pairs, -1, np.int32)
    n_runs, end = n_pairs, occ.shape[0]
    stamp = np.full(n_pairs, -1, np.int32)
    local = np.empty(n_pairs, np.int32)
    heap_count = np.empty(max(2 * n_pairs, 1024), np.int64)
    heap_key = np.empty(max(2 * n_pairs, 1024), np.int64)
    size = 0
    for i in range(n_pairs):
        if pair_count[i] > 0:
            size = _push(heap_count, heap_key, size, pair_count[i], pair_key[i])
    merges = np.empty((n_merges, 2), np.int32)
    where = np.empty(n, np.int32)
    new_pair = np.empty(1024, np.int32)
    new_pos = np.empty(1024, np.int32)
    touched = np.empty(1024, np.int32)
    done = 0
    while done < n_merges and size > 0:
        c, key = heap_count[0], heap_key[0]
        size = _pop(heap_count, heap_key, size)
        pair = ids[_slot(keys, key, bits)]
        if pair_count[pair] != c:  # stale entry: counts only fall after a pair's first push
            if pair_count[pair] > 0:
                size = _push(heap_count, heap_key, size, pair_count[pair], key)
            continue
        a, b = np.int32(key >> SHIFT), np.int32(key & LOW)
        merges[done, 0], merges[done, 1] = a, b
        k = _gather(pair, head, run_start, run_len, run_next, occ, where)
        head[pair] = -1
        if a == b:  # only then can occurrences overlap ("aaa"): take them left to right, as in the word
            where[:k] = np.sort(where[:k])
        need = n_pairs + 2 * k  # one step adds at most two pairs and two positions per occurrence
        if need > pair_key.shape[0]:
            pair_key, pair_count = _room(pair_key, need), _room(pair_count, need)
            head, stamp, local = _room(head, need), _room(stamp, need), _room(local, need)
        if 2 * need > (1 << bits):
            while 2 * need > (1 << bits):
                bits += 1
            keys, ids = _rehash(pair_key, n_pairs, bits)
        if 2 * k > new_pair.shape[0]:
            new_pair, new_pos, touched = _room(new_pair, 2 * k), _room(new_pos, 2 * k), _room(touched, 2 * k)
        new = np.int32(256 + done)
        n_pairs, n_new, n_touched = _apply(
            pos,
            where,
            k,
            a,
            b,
            new,
            keys,
            ids,
            bits,
            pair_key,
            pair_count,
            head,
            stamp,
            n_pairs,
            done,
            new_pair,
            new_pos,
            touched,
        )
        occ = _room(occ, end + n_new)
        run_start, run_len = _room(run_start, n_runs + n_touched), _room(run_len, n_runs + n_touched)
        run_next = _room(run_next, n_runs + n_touched)
        end, n_runs = _store(
            new_pair, new_pos, n_new, touched, n_touched, local, occ, end, head, run_start, run_len, run_next, n_runs
        )
        heap_count, heap_key = _room(heap_count, size + n_touched), _room(heap_key, size + n_touched)
        for i in range(n_touched):
            if pair_count[touched[i]] > 0:
                size = _push(heap_count, heap_key, size, pair_count[touched[i]], pair_key[touched[i]])
        done += 1
    return merges[:done]


class TrainerLimitError(BadInput):
    """A corpus beyond what the loop's int32 positions and word counts hold (~2 GB of distinct words)."""


def word_arrays(counts: Counter[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counted words as `train_merges` takes them (a one-byte word is there too; it holds no pair)."""
    words = [w.encode("utf-8") for w in counts]
    lengths = np.fromiter(map(len, words), np.int64, len(words))
    weights = np.fromiter(counts.values(), np.int64, len(words))
    limit = 2**31 - 1
    if int(lengths.sum()) >= limit or (len(words) and int(weights.max()) >= limit):
        raise TrainerLimitError(
            f"tokenizer: the corpus has {int(lengths.sum()):,} bytes of distinct pre-tokens and one seen "
            f"{int(weights.max()):,} times; the numba trainer holds less than 2^31 of either: set "
            "tokenizer.byte_budget, or tokenizer.trainer: rustbpe"
        )
    symbols = np.frombuffer(b"".join(words), np.uint8).astype(np.int32)
    word_end = np.zeros(symbols.shape[0], np.bool_)
    word_end[np.cumsum(lengths) - 1] = True
    return symbols, word_end, np.repeat(weights.astype(np.int32), lengths)


def compile_loop() -> float:
    """Compile the merge loop, or load it from Numba's cache; seconds taken, logged when it compiled.

    The first call after an install compiles (~8 s); every later process loads the cache (~0.3 s). The
    stage calls this before its clock starts, so `train_seconds` and MB/s measure training alone.
    """
    start = time.perf_counter()
    learn_tokens(Counter({"abab": 2}), 2)
    seconds = time.perf_counter() - start
    if seconds > 2:
        log.info("tokenizer: compiled the BPE merge loop in %.1f s (once: Numba caches it)", seconds)
    return seconds


def learn_tokens(counts: Counter[str], n_merges: int) -> tuple[list[bytes], list[int]]:
    """The tokens in rank order, as rustbpe's `get_mergeable_ranks`: the 256 bytes, then one per merge; and
    per token the length of its left part (0 for a byte), which spares `ranks.merges_from_ranks` its replay."""
    tokens = [bytes([i]) for i in range(256)]
    splits = [0] * 256
    symbols, word_end, weight = word_arrays(counts)
    if symbols.shape[0]:
        for a, b in train_merges(symbols, word_end, weight, n_merges).tolist():
            tokens.append(tokens[a] + tokens[b])
            splits.append(len(tokens[a]))
    return tokens, splits
