"""Bits per byte: texts any model can be scored on, whatever its tokenizer, and the unigram baseline.

BPB = -sum log2 p(text) / UTF-8 bytes, through lm-eval's rolling log-likelihood (its `bits_per_byte`
metric); DeepSeek-V3 reports it on the Pile test set for its base models (Table 3). Token counts cancel
out, so our checkpoint and an imported HF model compare on the same bytes. Sources:

* `heldout_en`, `heldout_zh`: the documents the tokenizer stage held out of its training
  (WORKDIR/tokenizer/heldout/<lang>.jsonl, written by `crawl2score.tokenizer.chat.write_heldout`).
* `public`: a fixed public text, the English pages of the Internet Archive WARC sample in
  `../shared/data/commoncrawl/` (a 2008 crawl, so no part of a current Common Crawl training slice),
  extracted with Trafilatura in file order.

Two unigram baselines on the same tokens (the checkpoint's tokenizer): `unigram_bits_per_byte`, the
token frequencies of the training shards (WORKDIR/tokens, add-one smoothed) scored on the text, the
model a network must beat to have learned more than frequencies; and `unigram_insample_bits_per_byte`,
the frequencies of the scored text itself (its empirical entropy), which no unigram model beats. Without
training shards (an imported model) only the second is given.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from crawl2score.benchmarks import shared_data_dir

SOURCES = ("heldout_en", "heldout_zh", "public")
PUBLIC_WARC = "commoncrawl/IAH-20080430204825-00000-blackbook.warc.gz"
TASK_PREFIX = "c2s_bpb_"


def task_name(source: str) -> str:
    if source not in SOURCES:
        raise KeyError(f"unknown BPB text {source!r} (known: {', '.join(SOURCES)})")
    return TASK_PREFIX + source


def _take(texts, max_bytes: int) -> list[str]:
    """Documents in order up to `max_bytes` (a fixed prefix of the source; the last one cut to fit)."""
    out, size = [], 0
    for text in texts:
        if not text.strip():
            continue
        data = text.encode("utf-8")[: max_bytes - size]
        out.append(data.decode("utf-8", errors="ignore"))
        size += len(out[-1].encode("utf-8"))
        if size >= max_bytes - 3:  # within one character of the budget
            break
    return out


def heldout_path(heldout_dir: str | Path, source: str) -> Path:
    return Path(heldout_dir) / f"{source.removeprefix('heldout_')}.jsonl"


def public_path(shared_dir: str | Path | None = None) -> Path:
    return (Path(shared_dir) / "data" if shared_dir else shared_data_dir()) / PUBLIC_WARC


def _public_texts(path: Path):
    import logging

    import trafilatura
    from warcio.archiveiterator import ArchiveIterator

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)  # empty pages are expected; skipped
    with open(path, "rb") as f:
        for record in ArchiveIterator(f):
            if record.rec_type != "response":
                continue
            headers = record.http_headers
            if headers is None or "html" not in (headers.get_header("Content-Type") or ""):
                continue
            html = record.content_stream().read().decode("utf-8", errors="replace")
            text = trafilatura.extract(html, favor_precision=True, include_comments=False)
            if text:
                yield text


def available(source: str, heldout_dir: str | Path | None) -> str | None:
    """None if the source can be read, else why not (the stage reports it and goes on)."""
    if source.startswith("heldout_"):
        path = heldout_path(heldout_dir or ".", source)
        return None if path.is_file() and path.stat().st_size else f"no held-out text at {path}"
    path = public_path()
    return None if path.is_file() else f"public text not found at {path}"


def load_texts(source: str, heldout_dir: str | Path | None, max_bytes: int) -> list[str]:
    """The first `max_bytes` of a source; held-out texts from `heldout_dir` (WORKDIR/tokenizer/heldout)."""
    if source.startswith("heldout_"):
        with open(heldout_path(heldout_dir or ".", source), encoding="utf-8") as f:
            return _take((json.loads(line)["text"] for line in f if line.strip()), max_bytes)
    if source == "public":
        return _take(_public_texts(public_path()), max_bytes)
    raise KeyError(f"unknown BPB text {source!r} (known: {', '.join(SOURCES)})")


def train_unigram_bpb(
    texts: list[str], encode: Callable[[str], list[int]], tokens_dir: str | Path, vocab_size: int
) -> float | None:
    """Bits per byte of the training shards' add-one-smoothed unigram model on `texts`; None without
    shards of this vocabulary."""
    import numpy as np

    from crawl2score.model.shards import TokenShards

    try:
        shards = TokenShards(tokens_dir)
    except (FileNotFoundError, ValueError, KeyError):
        return None
    if shards.vocab_size != vocab_size:
        return None
    counts = np.zeros(vocab_size, dtype=np.int64)
    step = 1 << 24
    for start in range(0, shards.num_tokens, step):
        counts += np.bincount(shards.tokens(start, min(start + step, shards.num_tokens)), minlength=vocab_size)
    logp = np.log2((counts + 1) / (counts.sum() + vocab_size))
    bits = -sum(float(logp[np.asarray(encode(t), dtype=np.int64)].sum()) for t in texts)
    return bits / sum(len(t.encode("utf-8")) for t in texts)


def unigram_bpb(texts: list[str], encode: Callable[[str], list[int]]) -> float:
    """Bits per byte of the best unigram model of these texts' own tokens (their empirical entropy)."""
    counts: Counter[int] = Counter()
    for t in texts:
        counts.update(encode(t))
    total = sum(counts.values())
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    bits = -sum(c * math.log2(c / total) for c in counts.values())
    return bits / n_bytes
