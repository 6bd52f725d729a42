"""Byte-level BPE as *ranks* (rustbpe, tiktoken) and as HF *vocab + merges* (tokenizer.json), both ways.

rustbpe trains and tiktoken encodes a BPE given as ranks: token bytes -> rank, where a rank is the merge
step that created the token (256 single bytes first). HF's BPE model wants a vocabulary of byte-level
strings and the merge list, pair by pair. This module is the bridge, so the Rust tools work on the same
`tokenizer.json` that `AutoTokenizer` reads:

* :func:`train_rustbpe` trains with rustbpe (the GIL released while Rust counts words on all workers, then
  one merge loop over a heap with lazy updates), recovers the merge list (:func:`merges_from_ranks`) and
  builds the HF tokenizer: specials at ids 0..S-1, the 256 bytes in the order HF's trainer gives them, then
  the learned tokens in merge order. Same layout, same files as the `tokenizers` trainer.
* :func:`train_numba` does the same with our own merge loop (`merge_loop.py`), which learns rustbpe's tokens.
* :func:`ranks_from_tokenizer_json` goes back: ranks equal to our ids, so tiktoken's output needs no mapping.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, models

from crawl2score.tokenizer.bpe import (
    GPT2_PATTERN,
    PRE_TOKENIZE_PATTERN,
    TIKTOKEN_PATTERN,
    TrainedBPE,
    fill_to_size,
    new_tokenizer,
    special_tokens,
)

log = logging.getLogger("crawl2score.tokenizer")

# Pre-tokenizer regex for rustbpe/tiktoken (fancy-regex) per tokenizer kind of `bpe.new_tokenizer`.
RUST_PATTERNS = {"deepseek": TIKTOKEN_PATTERN, "bytelevel": GPT2_PATTERN}


@cache
def byte_to_char() -> dict[int, str]:
    """GPT-2's byte -> printable character table, which HF's ByteLevel pre-tokenizer and decoder use.

    Written out here (13 lines, as in GPT-2's encoder.py) because it is part of the tokenizer.json format and
    neither tokenizers nor tiktoken exposes it; transformers has a copy, but importing it costs seconds.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


@cache
def _char_to_latin1() -> dict[int, str]:
    """Byte-level character -> the Latin-1 character of its byte: with str.translate, a C-speed mapping.

    Latin-1 characters outside the alphabet (space, controls) map to U+FFFF, which Latin-1 cannot encode.
    """
    table = {ord(c): chr(b) for b, c in byte_to_char().items()}
    for b in range(256):
        table.setdefault(b, "\uffff")
    return table


@cache
def _latin1_to_char() -> dict[int, str]:
    return {b: c for b, c in byte_to_char().items()}


def to_chars(token: bytes) -> str:
    return token.decode("latin-1").translate(_latin1_to_char())


def to_bytes(token: str) -> bytes:
    """Raises UnicodeEncodeError for a character outside the byte-level alphabet."""
    return token.translate(_char_to_latin1()).encode("latin-1")


class RanksError(ValueError):
    """Ranks that are no BPE: a token that no merge of two earlier tokens can make."""


def merges_from_ranks(tokens: list[bytes], splits: list[int] | None = None) -> tuple[list[tuple[bytes, bytes]], int]:
    """The merge (left, right) that made each multi-byte token, in rank order; and how many duplicates.

    rustbpe keeps its merges but exposes only the tokens' bytes by rank. A token's merge is a split into two
    earlier tokens; when only one split qualifies (two tokens in three here), that is it. Otherwise the
    merge is where BPE itself leaves the token one step before the end: we replay BPE on its bytes with the
    merges recovered so far (all of lower rank), always taking the lowest-ranked adjacent pair, as HF's BPE
    and the trainer do. A token whose bytes an earlier token already has (a second merge reaching the
    same string) gets no new id, so it is skipped and counted. A trainer that knows its merges passes
    `splits` (per token, the length of its left part; 0 for the 256 bytes) and nothing is replayed: BPE
    leaves a token where training made it (tests/tokenizer/test_merge_loop.py compares the two).
    """
    rank: dict[bytes, int] = {}
    merge_rank: dict[tuple[int, int], int] = {}
    merges: list[tuple[bytes, bytes]] = []
    duplicates = 0
    for r, tok in enumerate(tokens):
        n = len(tok)
        if n == 1:
            rank[tok] = r
            continue
        if tok in rank:
            duplicates += 1
            continue
        if splits is not None:
            i = splits[r]
        else:
            candidates = [i for i in range(1, n) if tok[:i] in rank and tok[i:] in rank]
            if not candidates:
                raise RanksError(f"token {tok!r} (rank {r}) is no merge of two earlier tokens")
            i = candidates[0] if len(candidates) == 1 else _last_split(tok, rank, merge_rank)
        merge_rank[(rank[tok[:i]], rank[tok[i:]])] = r
        rank[tok] = r
        merges.append((tok[:i], tok[i:]))
    return merges, duplicates


def _last_split(tok: bytes, rank: dict[bytes, int], merge_rank: dict[tuple[int, int], int]) -> int:
    """Byte offset of the split BPE reaches just before merging `tok` (lowest merge rank first)."""
    none = 1 << 62  # no merge: sorts after every rank
    parts = [rank[tok[j : j + 1]] for j in range(len(tok))]
    lengths = [1] * len(tok)
    get = merge_rank.get
    pair_rank = [get((a, b), none) for a, b in itertools.pairwise(parts)]
    while len(parts) > 2:
        best = min(pair_rank)
        if best == none:
            break
        j = pair_rank.index(best)  # the leftmost of equal ranks, as HF's BPE
        parts[j : j + 2] = [best]
        lengths[j : j + 2] = [lengths[j] + lengths[j + 1]]
        del pair_rank[j]
        if j > 0:
            pair_rank[j - 1] = get((parts[j - 1], best), none)
        if j < len(pair_rank):
            pair_rank[j] = get((best, parts[j + 1]), none)
    if len(parts) != 2:
        raise RanksError(f"token {tok!r}: BPE on its bytes ends in {len(parts)} parts, not 2")
    return lengths[0]


def hf_from_ranks(
    tokens: list[bytes], specials: list[str], kind: str = "deepseek", splits: list[int] | None = None
) -> tuple[Tokenizer, int]:
    """The HF tokenizer of a BPE given by its tokens in rank order; also the count of duplicates skipped.

    Ids: the specials, the 256 bytes sorted by their byte-level character (what HF's trainer does with its
    initial alphabet), then each learned token in merge order.
    """
    merges, duplicates = merges_from_ranks(tokens, splits)
    vocab = {s: i for i, s in enumerate(specials)}
    for ch in sorted(byte_to_char().values()):
        vocab[ch] = len(vocab)
    pairs = []
    for left, right in merges:
        a, b = to_chars(left), to_chars(right)
        vocab[a + b] = len(vocab)
        pairs.append((a, b))
    tok = new_tokenizer(kind, models.BPE(vocab=vocab, merges=pairs))
    tok.add_special_tokens(specials)
    return tok, duplicates


def _texts(batches: Iterable[list[str]]) -> Iterator[str]:
    return itertools.chain.from_iterable(batches)


def train_rustbpe(
    batches: Iterable[list[str]],
    vocab_size: int,
    *,
    reserved: int,
    kind: str = "deepseek",
    require_exact: bool = False,
) -> TrainedBPE:
    """Train with rustbpe to `vocab_size` entries, specials included; same result type as `bpe.train_bpe`.

    rustbpe has no minimum pair frequency: it merges while any pair occurs. On a corpus that fills the
    vocabulary this changes nothing (the last of 102,400 merges is seen hundreds of times on 30 MB); on a
    tiny one it learns pairs seen once where the `tokenizers` trainer (min_frequency=2) stops short.
    """
    import rustbpe

    specials = _specials_for(vocab_size, reserved)
    trainer = rustbpe.Tokenizer()
    # rustbpe pulls buffer_size texts under the GIL, then counts them on all cores with the GIL released: a
    # buffer of ~1,000 documents lets a reader thread (train.py) parse the next ones meanwhile.
    trainer.train_from_iterator(
        _texts(batches), vocab_size - len(specials), buffer_size=1024, pattern=RUST_PATTERNS[kind]
    )
    ranked = sorted(trainer.get_mergeable_ranks(), key=lambda item: item[1])
    return _trained([bytes(b) for b, _ in ranked], vocab_size, specials, reserved, kind, require_exact, "rustbpe")


def train_numba(
    batches: Iterable[list[str]],
    vocab_size: int,
    *,
    reserved: int,
    kind: str = "deepseek",
    require_exact: bool = False,
    workers: int = 1,
) -> TrainedBPE:
    """Train with our merge loop (`merge_loop.py`): rustbpe's tokens, the same tokenizer.json, faster.

    Words are counted with Python's `regex` on `workers` processes (`pretokenize.py`), then merged in one
    Numba-compiled loop that releases the GIL. The first call on a machine compiles the loop (~8 s, then
    cached: `merge_loop.compile_loop`).
    """
    from crawl2score.tokenizer.merge_loop import learn_tokens
    from crawl2score.tokenizer.pretokenize import count_words

    specials = _specials_for(vocab_size, reserved)
    counts = count_words(batches, RUST_PATTERNS[kind], workers)
    tokens, splits = learn_tokens(counts, vocab_size - len(specials) - 256)
    return _trained(tokens, vocab_size, specials, reserved, kind, require_exact, "numba", splits)


def _specials_for(vocab_size: int, reserved: int) -> list[str]:
    specials = special_tokens(reserved)
    if vocab_size < len(specials) + 256:
        raise ValueError(f"vocab_size {vocab_size} < {len(specials)} specials + 256 bytes")
    return specials


def _trained(
    tokens: list[bytes],
    vocab_size: int,
    specials: list[str],
    reserved: int,
    kind: str,
    require_exact: bool,
    by: str,
    splits: list[int] | None = None,
) -> TrainedBPE:
    """The HF tokenizer of ranked tokens, filled to `vocab_size` (the shared end of both rank trainers)."""
    tok, duplicates = hf_from_ranks(tokens, specials, kind, splits)
    if duplicates:
        log.warning("%s: %d merge(s) repeated an existing token; they take no id", by, duplicates)
    why = f"distinct pairs ({by} merges while any pair occurs)"
    return fill_to_size(tok, vocab_size, reserved=reserved, kind=kind, require_exact=require_exact, why=why)


def ranks_from_tokenizer_json(data: dict[str, Any]) -> tuple[dict[bytes, int], str] | str:
    """(ranks, tiktoken pattern) equal to the HF tokenizer, or the reason there are none.

    tiktoken merges the adjacent pair whose *concatenation* has the lowest rank; HF's BPE merges the pair
    with the lowest *merge* index. With ranks = ids these agree when every merge makes a new token and the
    ids of merged tokens grow with the merge index (true of rustbpe's output and of `tokenizers`' unless it
    repeated a token); tests/tokenizer/test_encode.py pins the ids equal on arbitrary text.
    """
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        return "model is not BPE"
    for key in ("dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            return f"BPE option {key} is set"
    if model.get("byte_fallback"):
        return "BPE option byte_fallback is set"
    if data.get("normalizer") is not None:
        return "tokenizer has a normalizer"
    pattern = _rust_pattern(data.get("pre_tokenizer"))
    if pattern is None:
        return "pre-tokenizer is not ours (one-pass DeepSeek regex + byte level)"
    added = {t["content"] for t in data.get("added_tokens", [])}
    if not all(t.get("special") for t in data.get("added_tokens", [])):
        return "tokenizer has added tokens that are not special"
    vocab: dict[str, int] = model["vocab"]
    tokens = [t for t in vocab if t not in added]
    try:  # one translate and encode for the whole vocabulary (per token: 3x the time, ~0.1 s of a shard run)
        joined = to_bytes("".join(tokens))
    except UnicodeEncodeError:
        return "vocabulary is not byte level"
    ranks, end = {}, 0
    for t in tokens:  # a byte-level character is one byte
        ranks[joined[end : end + len(t)]] = vocab[t]
        end += len(t)
    if any(bytes([b]) not in ranks for b in range(256)):
        return "vocabulary lacks some of the 256 bytes"
    last = -1
    for m in model["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        i = vocab.get(a + b)
        if i is None or i <= last:
            return "a merge repeats a token or comes out of id order"
        last = i
    return ranks, pattern


def _rust_pattern(pre: dict[str, Any] | None) -> str | None:
    """The fancy-regex pattern splitting as `bpe.deepseek_pre_tokenizer()`, if that is the pre-tokenizer."""
    if not pre or pre.get("type") != "Sequence" or len(pre.get("pretokenizers", [])) != 2:
        return None
    split, byte_level = pre["pretokenizers"]
    if (
        split.get("type") == "Split"
        and split.get("pattern") == {"Regex": PRE_TOKENIZE_PATTERN}
        and split.get("behavior") == "Isolated"
        and not split.get("invert")
        and byte_level.get("type") == "ByteLevel"
        and not byte_level.get("add_prefix_space")
        and not byte_level.get("use_regex")
    ):
        return TIKTOKEN_PATTERN
    return None


def read_tokenizer_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return json.loads((path / "tokenizer.json" if path.is_dir() else path).read_text(encoding="utf-8"))
