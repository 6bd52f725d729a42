"""Memory-mapped reader of the tokenized corpus (WORKDIR/tokens/), for the trainer.

numpy only: this runs on a bare GPU worker, so it must not import tokenizers, datasets or Prefect. The
writer is `crawl2score/tokenizer/shards.py`; the format, in short:

* ``manifest.json`` lists shards in order, with ``vocab_size``, ``bos_id``, ``eos_id``, ``pad_id``,
  ``dtype: "uint32"`` and counts;
* ``shard-NNNNN.bin`` holds little-endian uint32 ids; each document is its tokens followed by ``eos_id``;
* ``shard-NNNNN.idx`` holds ``num_docs + 1`` little-endian int64 offsets of the documents in that shard.

The shards are read as one concatenated stream of ``num_tokens`` ids. Sequence ``i`` of length ``seq_len``
is the window ``stream[i*seq_len : i*seq_len + seq_len + 1]``: ``seq_len + 1`` ids so inputs are
``seq[:-1]`` and targets ``seq[1:]``; consecutive windows share one boundary token (the last id of window
``i`` is the first of window ``i+1``), so every token is a target exactly once. Windows cross document (and
shard) boundaries; ``doc_ids`` gives the document of each position so attention can be masked per document.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from crawl2score.errors import BadInput

TOKEN_DTYPE = np.dtype("<u4")
INDEX_DTYPE = np.dtype("<i8")


class TokenShards:
    """The token stream of WORKDIR/tokens/ (memory-mapped; opening costs no reads of the token data)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path}: no token manifest (run `crawl2score tokens` first)")
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if self.manifest.get("dtype") != "uint32":
            raise BadInput(f"{manifest_path}: dtype {self.manifest.get('dtype')!r}, expected 'uint32'")
        self.vocab_size: int = int(self.manifest["vocab_size"])
        self.bos_id: int = int(self.manifest["bos_id"])
        self.eos_id: int = int(self.manifest["eos_id"])
        self.pad_id: int = int(self.manifest["pad_id"])
        self._tokens: list[np.ndarray] = []
        self._index: list[np.ndarray] = []
        for shard in self.manifest["shards"]:
            n, d = int(shard["num_tokens"]), int(shard["num_docs"])
            bin_path = self.path / shard["path"]
            idx_path = self.path / shard.get("index", Path(shard["path"]).with_suffix(".idx").name)
            if bin_path.stat().st_size != n * TOKEN_DTYPE.itemsize:
                raise BadInput(f"{bin_path}: {bin_path.stat().st_size} bytes, manifest says {n} tokens")
            self._tokens.append(_memmap(bin_path, TOKEN_DTYPE, n))
            self._index.append(_memmap(idx_path, INDEX_DTYPE, d + 1))
        counts = [len(t) for t in self._tokens]
        # Global offsets of each shard's first token and first document.
        self._token_base = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self._doc_base = np.concatenate([[0], np.cumsum([len(i) - 1 for i in self._index], dtype=np.int64)])
        self.num_tokens: int = int(self._token_base[-1])
        self.num_docs: int = int(self._doc_base[-1])

    def __repr__(self) -> str:
        return f"TokenShards({str(self.path)!r}, num_tokens={self.num_tokens}, num_docs={self.num_docs})"

    def num_sequences(self, seq_len: int) -> int:
        """Windows of seq_len + 1 ids that fit, consecutive ones sharing their boundary token."""
        if seq_len < 1:
            raise BadInput(f"seq_len must be >= 1, got {seq_len}")
        return max(0, (self.num_tokens - 1) // seq_len)

    def _window(self, i: int, seq_len: int) -> tuple[int, int]:
        n = self.num_sequences(seq_len)
        if not 0 <= i < n:
            raise IndexError(f"sequence {i} out of range [0, {n}) for seq_len={seq_len}")
        start = i * seq_len
        return start, start + seq_len + 1

    def _pieces(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        """(shard, local start, local stop) covering global [start, stop)."""
        out = []
        shard = int(np.searchsorted(self._token_base, start, side="right")) - 1
        while start < stop:
            base, end = int(self._token_base[shard]), int(self._token_base[shard + 1])
            if end > start:
                take = min(stop, end)
                out.append((shard, start - base, take - base))
                start = take
            shard += 1
        return out

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Ids of the global stream [start, stop) as int64 (a copy, safe to hand to torch)."""
        if not 0 <= start <= stop <= self.num_tokens:
            raise IndexError(f"token range [{start}, {stop}) outside [0, {self.num_tokens})")
        parts = [self._tokens[s][a:b] for s, a, b in self._pieces(start, stop)]
        return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)

    def sequence(self, i: int, seq_len: int) -> np.ndarray:
        """Window i: int64 array of seq_len + 1 ids (inputs = [:-1], targets = [1:])."""
        return self.tokens(*self._window(i, seq_len))

    def doc_ids(self, i: int, seq_len: int) -> np.ndarray:
        """Global document index of each of the seq_len + 1 positions of window i (int64).

        A document's trailing EOS carries that document's index, so the EOS position attends within its
        document and predicts the next document's first token; positions with different ids must not attend
        to each other.
        """
        start, stop = self._window(i, seq_len)
        parts = []
        for s, a, b in self._pieces(start, stop):
            local = np.searchsorted(self._index[s], np.arange(a, b, dtype=np.int64), side="right") - 1
            parts.append(local + self._doc_base[s])
        return np.concatenate(parts).astype(np.int64)

    def document(self, k: int) -> np.ndarray:
        """Ids of global document k, its trailing EOS included (for checks and examples)."""
        if not 0 <= k < self.num_docs:
            raise IndexError(f"document {k} out of range [0, {self.num_docs})")
        s = int(np.searchsorted(self._doc_base, k, side="right")) - 1
        local = k - int(self._doc_base[s])
        a, b = int(self._index[s][local]), int(self._index[s][local + 1])
        return self._tokens[s][a:b].astype(np.int64)


def _memmap(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    # np.memmap refuses empty files; an empty shard is legal (an empty corpus), so use a plain empty array.
    if count == 0:
        return np.empty(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))
