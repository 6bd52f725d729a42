"""Tokenize the corpus into binary shards the trainer memory-maps (read by `model.shards.TokenShards`).

Layout of WORKDIR/tokens/ (all little-endian):

* ``shard-NNNNN.bin``: uint32 token ids (the vocabulary exceeds 65,535). Every document is its tokens
  followed by ``eos_id``; no BOS is inserted, so EOS alone separates documents.
* ``shard-NNNNN.idx``: int64 offsets, ``num_docs + 1`` of them: document k of the shard is
  ``bin[idx[k]:idx[k+1]]`` (its trailing EOS included), ``idx[0] == 0``, ``idx[-1] == num_tokens``.
* ``manifest.json``: ids of the special tokens, vocabulary size, the tokenizer's hash and per-shard and
  per-language counts (see :func:`write_shards`).

Documents are never split across shards. A shard closes at the first document boundary past
``shard_tokens``. Files are read in sorted order and encoded in fixed batches, so the same corpus and
tokenizer give byte-identical shards. Encoding is parallel across the documents of a batch (tiktoken threads,
or rayon inside tokenizers) while a reader thread parses the next batch. Each file is written under a temporary name and renamed;
the whole directory is built aside and renamed into place, so a reader never sees half a stage.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np

from crawl2score.tokenizer.bpe import set_threads
from crawl2score.tokenizer.corpus import CorpusError, Document, batched, corpus_location, iter_documents, unit_hash
from crawl2score.tokenizer.encode import Encoder, load_encoder
from crawl2score.workdir import atomic_dir, atomic_write_json, file_hash

TOKEN_DTYPE = np.dtype("<u4")
INDEX_DTYPE = np.dtype("<i8")
MANIFEST = "manifest.json"
FORMAT = "crawl2score-tokens-v1"
T = TypeVar("T")


class _ShardWriter:
    """One shard at a time: tokens appended to a temporary .bin, offsets kept for the .idx."""

    def __init__(self, out_dir: Path, shard_tokens: int) -> None:
        self.out_dir = out_dir
        self.shard_tokens = shard_tokens
        self.shards: list[dict[str, Any]] = []
        self._file: IO[bytes] | None = None

    def _open(self) -> None:
        self.name = f"shard-{len(self.shards):05d}"
        self._tmp = self.out_dir / f".{self.name}.bin.tmp"
        self._file = open(self._tmp, "wb")
        self.offsets = [0]
        self.tokens_per_language: dict[str, int] = {}
        self.num_tokens = 0

    def add(self, arr: np.ndarray, lengths: list[int], languages: list[str]) -> None:
        """Append a batch (`arr`: the documents' tokens back to back, each ending in EOS), closing the shard
        at the first document boundary at or past `shard_tokens`."""
        pos = 0
        first = 0  # first document of the batch not yet written
        for j, (n, lang) in enumerate(zip(lengths, languages, strict=True)):
            if self._file is None:
                self._open()
            self.num_tokens += n
            self.offsets.append(self.num_tokens)
            self.tokens_per_language[lang] = self.tokens_per_language.get(lang, 0) + n
            if self.num_tokens >= self.shard_tokens:
                end = pos + sum(lengths[first : j + 1])
                self._write(arr[pos:end])
                pos, first = end, j + 1
                self.close()
        if pos < len(arr):
            self._write(arr[pos:])

    def _write(self, arr: np.ndarray) -> None:
        assert self._file is not None
        self._file.write(arr.tobytes())

    def close(self) -> None:
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.replace(self._tmp, self.out_dir / f"{self.name}.bin")
        idx_tmp = self.out_dir / f".{self.name}.idx.tmp"
        with open(idx_tmp, "wb") as f:
            f.write(np.asarray(self.offsets, dtype=INDEX_DTYPE).tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(idx_tmp, self.out_dir / f"{self.name}.idx")
        self.shards.append(
            {
                "path": f"{self.name}.bin",
                "index": f"{self.name}.idx",
                "num_tokens": self.num_tokens,
                "num_docs": len(self.offsets) - 1,
                "tokens_per_language": dict(sorted(self.tokens_per_language.items())),
            }
        )


def prefetch(it: Iterator[T], depth: int = 4) -> Iterator[T]:
    """Run the reader (gzip + JSON) in a thread so it overlaps encoding or training, which release the GIL."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in it:
                if stop.is_set():
                    return
                q.put(item)
            q.put(done)
        except BaseException as exc:  # re-raised in the consumer, with its traceback
            q.put(exc)

    thread = threading.Thread(target=work, name="shard-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def encode_batch(encoder: Encoder, docs: list[Document], eos_id: int) -> tuple[np.ndarray, list[int]]:
    """The batch's documents as one uint32 array, each followed by EOS, and each document's length."""
    ids = encoder.encode_batch([d.text for d in docs])
    lengths = [len(x) + 1 for x in ids]
    arr = np.empty(sum(lengths), dtype=TOKEN_DTYPE)
    pos = 0
    for x, n in zip(ids, lengths, strict=True):
        arr[pos : pos + n - 1] = x
        arr[pos + n - 1] = eos_id
        pos += n
    return arr, lengths


def write_shards(
    files: list[Path],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    *,
    shard_tokens: int = 50_000_000,
    batch_docs: int = 512,
    workers: int = 2,
    encoder: str = "auto",
    heldout_fraction: float = 0.0,
    seed: int = 0,
    on_progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Encode every document of `files` into shards under out_dir; returns the manifest (also written).

    `encoder`: auto | tiktoken | tokenizers (`crawl2score.tokenizer.encode`); every one gives the HF
    tokenizer's ids, so the shards are the same bytes whichever runs. Documents of the tokenizer's held-out
    split (the same `heldout_fraction` and `seed` as `training_batches`) are left out, so the held-out
    bits per byte the eval stage reports is measured on text the model never trained on.
    """
    set_threads(workers)
    tokenizer_dir = Path(tokenizer_dir)
    enc = load_encoder(tokenizer_dir, encoder, workers)
    ids = enc.special_ids
    n_files = len(files)
    done_files = [0]

    def on_file(_path: Path) -> None:
        done_files[0] += 1
        if on_progress is not None:
            on_progress(done_files[0] / max(n_files, 1))

    bar = _bar("tokenize")
    t0 = time.perf_counter()
    n_bytes = 0
    with atomic_dir(out_dir) as tmp:
        writer = _ShardWriter(tmp, shard_tokens)
        heldout_docs = [0]

        def trained_on(docs: Iterator[Document]) -> Iterator[Document]:
            for doc in docs:
                if heldout_fraction > 0 and unit_hash(seed, "heldout", doc.id) < heldout_fraction:
                    heldout_docs[0] += 1
                    continue
                yield doc

        for docs in prefetch(batched(trained_on(iter_documents(files, on_file_done=on_file)), batch_docs)):
            arr, lengths = encode_batch(enc, docs, ids["eos_id"])
            writer.add(arr, lengths, [d.language for d in docs])
            batch_bytes = sum(len(d.text.encode("utf-8")) for d in docs)
            n_bytes += batch_bytes
            bar.update(batch_bytes)
        writer.close()
        bar.close()
        seconds = time.perf_counter() - t0
        per_lang: dict[str, int] = {}
        for s in writer.shards:
            for lang, n in s["tokens_per_language"].items():
                per_lang[lang] = per_lang.get(lang, 0) + n
        num_tokens = sum(s["num_tokens"] for s in writer.shards)
        if num_tokens == 0:  # raised inside atomic_dir: no tokens/ folder, no marker, the previous one kept
            raise CorpusError(
                f"{corpus_location(files, str(tokenizer_dir))}: no text to encode in {n_files} file(s) (every document empty or held out "
                f"by tokenizer.heldout_fraction {heldout_fraction}); {heldout_docs[0]} held out"
            )
        manifest = {
            "format": FORMAT,
            "dtype": "uint32",
            "index_dtype": "int64",
            "layout": "each document = its tokens + eos_id; idx[k]..idx[k+1] is document k (num_docs+1 offsets)",
            "vocab_size": enc.vocab_size,
            **ids,
            "tokenizer_hash": file_hash(tokenizer_dir / "tokenizer.json"),
            "encoder": enc.name,
            "num_tokens": num_tokens,
            "num_docs": sum(s["num_docs"] for s in writer.shards),
            "heldout_docs_left_out": heldout_docs[0],
            "num_bytes": n_bytes,
            "tokens_per_language": dict(sorted(per_lang.items())),
            "shards": writer.shards,
        }
        atomic_write_json(tmp / MANIFEST, manifest)
    if on_progress is not None:
        on_progress(1.0)
    manifest["seconds"] = round(seconds, 2)
    manifest["mb_per_s"] = round(n_bytes / 1e6 / seconds, 3) if seconds > 0 else None
    return manifest


def _bar(desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        desc=desc,
        unit="B",
        unit_scale=True,
        disable=True if os.environ.get("CRAWL2SCORE_NO_BAR") == "1" else None,
        leave=False,
    )
