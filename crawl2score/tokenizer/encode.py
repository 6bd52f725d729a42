"""Encoders of documents into ids: tiktoken built from the tokenizer's own ranks and regex, or HF tokenizers.

Both give the ids `AutoTokenizer` gives for the same `tokenizer.json` (no specials added; the literal text of
a special token is plain text). tiktoken is ~2-3x faster per CPU second on our tokenizer (BENCHMARKS.md):
its BPE works on byte ranks in one pass and a whole piece found in the vocabulary is one lookup, where HF
also builds per-token offsets and strings. `auto` takes tiktoken when the tokenizer allows it
(:func:`crawl2score.tokenizer.ranks.ranks_from_tokenizer_json`), and `tokenizers` otherwise, with a log line
saying why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from crawl2score.errors import BadInput
from crawl2score.tokenizer.bpe import (
    BOS,
    EOS,
    PAD,
    TIKTOKEN_PATTERN,
    encode_texts,
    load_tokenizer,
    set_threads,
    special_ids,
)
from crawl2score.tokenizer.ranks import ranks_from_tokenizer_json, read_tokenizer_json
from crawl2score.workdir import atomic_write_bytes, file_hash

log = logging.getLogger("crawl2score.tokenizer")

ENCODERS = ("auto", "tiktoken", "tokenizers")


class Encoder(Protocol):
    name: str
    special_ids: dict[str, int]  # bos_id, eos_id, pad_id
    vocab_size: int  # ids in use, specials and filler included

    def encode_batch(self, texts: list[str]) -> list[Sequence[int]]:
        """Ids of each text, in order, no special tokens added."""
        ...


class HFEncoder:
    """HF tokenizers' `encode_batch_fast` (parallel over the batch in rayon, RAYON_NUM_THREADS)."""

    name = "tokenizers"

    def __init__(self, tokenizer_dir: str | Path, workers: int = 2) -> None:
        set_threads(workers)
        self.tokenizer = load_tokenizer(tokenizer_dir)
        self.special_ids = special_ids(self.tokenizer)
        self.vocab_size = self.tokenizer.get_vocab_size()

    def encode_batch(self, texts: list[str]) -> list[Sequence[int]]:
        return encode_texts(self.tokenizer, texts)  # type: ignore[return-value]


class TiktokenEncoder:
    """tiktoken's core BPE on `workers` threads (it releases the GIL while encoding one text)."""

    name = "tiktoken"

    def __init__(
        self,
        ranks: dict[bytes, int],
        pattern: str,
        workers: int = 2,
        data: dict[str, Any] | None = None,
        ids_and_size: tuple[dict[str, int], int] | None = None,
    ) -> None:
        """`data`: the parsed tokenizer.json, or `ids_and_size` read off it: the special ids and the size (not
        needed to encode)."""
        import tiktoken

        self.encoding = tiktoken.Encoding("crawl2score", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
        self.workers = workers
        if ids_and_size is None:
            ids_and_size = _ids_and_size(data) if data is not None else ({}, len(ranks))
        self.special_ids, self.vocab_size = ids_and_size

    def encode_batch(self, texts: list[str]) -> list[Sequence[int]]:
        if self.workers <= 1:
            return [self.encoding.encode_ordinary(t) for t in texts]
        return self.encoding.encode_ordinary_batch(texts, num_threads=self.workers)  # type: ignore[return-value]


class EncoderError(BadInput):
    """tiktoken was asked for but cannot reproduce this tokenizer."""


def load_encoder(tokenizer_dir: str | Path, kind: str = "auto", workers: int = 2) -> Encoder:
    """The encoder `kind` (auto | tiktoken | tokenizers) for the tokenizer in `tokenizer_dir`."""
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder {kind!r}: expected one of {', '.join(ENCODERS)}")
    if kind == "tokenizers":
        return HFEncoder(tokenizer_dir, workers)
    cached = read_ranks_cache(tokenizer_dir)
    if cached is not None:
        ranks, ids_and_size = cached
        return TiktokenEncoder(ranks, TIKTOKEN_PATTERN, workers, ids_and_size=ids_and_size)
    data = read_tokenizer_json(tokenizer_dir)
    found = ranks_from_tokenizer_json(data)
    if isinstance(found, str):
        if kind == "tiktoken":
            raise EncoderError(f"{tokenizer_dir}: tiktoken cannot encode this tokenizer: {found}")
        log.info("encoder: tokenizers (tiktoken cannot encode %s: %s)", tokenizer_dir, found)
        return HFEncoder(tokenizer_dir, workers)
    ranks, pattern = found
    return TiktokenEncoder(ranks, pattern, workers, data)


def _ids_and_size(data: dict[str, Any]) -> tuple[dict[str, int], int]:
    """What `bpe.special_ids` and `Tokenizer.get_vocab_size` give, read off the parsed tokenizer.json (loading
    it into tokenizers as well would cost ~0.5 s of a shard run)."""
    vocab: dict[str, int] = data["model"]["vocab"]
    added = {t["content"]: t["id"] for t in data.get("added_tokens", [])}
    ids = {
        name: added.get(token, vocab.get(token)) for name, token in (("bos_id", BOS), ("eos_id", EOS), ("pad_id", PAD))
    }
    missing = [k for k, v in ids.items() if v is None]
    if missing:
        raise ValueError(f"tokenizer lacks special tokens: {', '.join(missing)}")
    return ids, len(vocab) + sum(1 for t in added if t not in vocab)  # type: ignore[return-value]


# tiktoken's ranks, cached by the tokenizer stage next to tokenizer.json. Parsing the 102,400-entry
# tokenizer.json and checking its merges is ~0.2 s of every shard run (an eighth of encoding 30 MB); the
# cache is read in ~0.03 s. It is used only while it names the sha256 of the tokenizer.json beside it and the
# tiktoken pattern of this code, so an edited or replaced tokenizer.json is parsed again; anything else
# wrong with it (cut short, another format) also falls back to parsing.
RANKS_CACHE = "tiktoken_ranks.bin"
RANKS_FORMAT = "crawl2score-tiktoken-ranks-v1"


def write_ranks_cache(tokenizer_dir: str | Path) -> bool:
    """Write the cache for the tokenizer in `tokenizer_dir` if tiktoken can encode it; whether it did."""
    tokenizer_dir = Path(tokenizer_dir)
    data = read_tokenizer_json(tokenizer_dir)
    found = ranks_from_tokenizer_json(data)
    if isinstance(found, str):
        return False
    ranks, pattern = found
    ids_, size = _ids_and_size(data)
    tokens = sorted(ranks, key=ranks.__getitem__)
    header = {
        "format": RANKS_FORMAT,
        "tokenizer_sha256": file_hash(tokenizer_dir / "tokenizer.json", length=64),
        "pattern": pattern,
        "special_ids": ids_,
        "vocab_size": size,
        "count": len(tokens),
    }
    atomic_write_bytes(
        tokenizer_dir / RANKS_CACHE,
        json.dumps(header).encode()
        + b"\n"
        + np.array([ranks[t] for t in tokens], dtype="<u4").tobytes()
        + np.array([len(t) for t in tokens], dtype="<u4").tobytes()
        + b"".join(tokens),
    )
    return True


def read_ranks_cache(tokenizer_dir: str | Path) -> tuple[dict[bytes, int], tuple[dict[str, int], int]] | None:
    """(ranks, (special ids, size)) from a current cache, else None."""
    tokenizer_dir = Path(tokenizer_dir)
    path = tokenizer_dir / RANKS_CACHE if tokenizer_dir.is_dir() else None
    if path is None or not path.is_file():
        return None
    try:
        raw = path.read_bytes()
        end = raw.index(b"\n")
        header = json.loads(raw[:end])
        if (
            not isinstance(header, dict)
            or header.get("format") != RANKS_FORMAT
            or header.get("pattern") != TIKTOKEN_PATTERN
            or header.get("tokenizer_sha256") != file_hash(tokenizer_dir / "tokenizer.json", length=64)
        ):
            return None
        n = int(header["count"])
        ids = np.frombuffer(raw, dtype="<u4", count=n, offset=end + 1).tolist()
        ends = np.cumsum(np.frombuffer(raw, dtype="<u4", count=n, offset=end + 1 + 4 * n)).tolist()
        start = end + 1 + 8 * n
        if start + (ends[-1] if ends else 0) != len(raw):
            return None
        blob = raw[start:]
        ranks = dict(zip((blob[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)), ids, strict=True))
        if len(ranks) != n:
            return None
        return ranks, (dict(header["special_ids"]), int(header["vocab_size"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        log.info("encoder: %s is unreadable; parsing tokenizer.json instead", path)
        return None
