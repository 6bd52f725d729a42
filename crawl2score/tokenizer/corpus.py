"""Streaming the corpus: find input files, yield documents one by one, sample them for tokenizer training.

Nothing here holds more than one batch of documents in memory, so a corpus far larger than RAM trains and
tokenizes. Files are read in sorted order and sampling decisions are hashes of the document id, so the same
input gives the same training stream and the same shards on every machine.

Formats: datatrove JSONL (``.jsonl``, ``.json``, optionally ``.gz``/``.zst``) with ``text``, ``id`` and
``metadata.language``; Parquet with the same columns; plain text (``.txt``, optionally ``.gz``), one document
per file.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from crawl2score.errors import BadInput

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
TEXT_SUFFIXES = (".txt", ".text", ".md")
PARQUET_SUFFIXES = (".parquet",)
UNKNOWN_LANGUAGE = "und"


class CorpusError(BadInput):
    """No usable input: the message names the path and what is missing."""


@dataclass(frozen=True, slots=True)
class Document:
    text: str
    id: str
    language: str


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    for ext in (".gz", ".zst"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    return None


def find_input_files(spec: str | os.PathLike[str]) -> list[Path]:
    """A directory (searched recursively) or a glob, as a sorted list of readable corpus files."""
    spec = str(spec)
    if os.path.isdir(spec):
        candidates = [p for p in Path(spec).rglob("*") if p.is_file()]
    elif os.path.isfile(spec):
        candidates = [Path(spec)]
    else:
        candidates = [Path(p) for p in glob.glob(spec, recursive=True) if os.path.isfile(p)]
    # Hidden files are other writers' temporaries (datatrove, our own atomic writes).
    files = sorted(p for p in candidates if _kind(p) and not p.name.startswith("."))
    if not files:
        raise CorpusError(f"{spec}: no .jsonl[.gz], .parquet or .txt files found")
    return files


def corpus_files(spec: str | None, workdir: str | os.PathLike[str]) -> list[Path]:
    """The corpus: `spec` (tokenizer.input) or else the data stage's output. A data stage that completed
    and kept no document says so, rather than "no files found" in a folder the user never named."""
    if spec:
        return find_input_files(spec)
    from crawl2score.workdir import read_marker, stage_dir

    data = stage_dir(workdir, "data")
    if ((read_marker(workdir, "data") or {}).get("figures") or {}).get("output_documents") == 0:
        raise CorpusError(
            f"{workdir}: the data stage kept no document, so there is nothing to train on "
            f"(see {data / 'stats.json'}; give it more or other input)"
        )
    return find_input_files(data / "output")


def corpus_location(files: list[Path], default: str) -> str:
    """Where a list of corpus files lives, for an error line: their common folder (or the one file)."""
    return os.path.commonpath([str(f) for f in files]) if files else default


def files_fingerprint(files: Iterable[Path]) -> str:
    """Names, sizes and mtimes: a cheap key that changes when a user edits their own corpus."""
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


class _ZstdFrames(io.RawIOBase):
    """The bytes of a .zst file (one frame or several back to back); EOFError if it ends inside a frame.

    Written here because zstandard's own readers (`zstandard.open`, `stream_reader`) return what they have when
    the input stops mid-frame: a .jsonl.zst cut short in a copy would silently train on part of itself.
    Each frame's `decompressobj` says whether the frame ended.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard  # datatrove[io] dependency; only needed for .zst input

        super().__init__()
        self._raw, self._dctx = raw, zstandard.ZstdDecompressor()
        self._frame: Any = None
        self._out, self._pos = memoryview(b""), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._pos == len(self._out):
            # A few KiB of input at a time: decompressobj inflates all it is given at once, and highly
            # repetitive text inflates ~10,000-fold, so this bounds memory to ~25 MB in the worst case.
            chunk = self._raw.read(1 << 11)
            if not chunk:
                if self._frame is not None and not self._frame.eof:
                    raise EOFError("zstd frame cut short: the file ends inside it")
                return 0
            parts = []
            while chunk:
                if self._frame is None or self._frame.eof:
                    self._frame = self._dctx.decompressobj()
                parts.append(self._frame.decompress(chunk))
                chunk = self._frame.unused_data if self._frame.eof else b""
            self._out, self._pos = memoryview(b"".join(parts)), 0
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open_text(path: Path) -> IO[str]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    if name.endswith(".zst"):
        return io.TextIOWrapper(io.BufferedReader(_ZstdFrames(open(path, "rb"))), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _language(record: dict[str, Any]) -> str:
    meta = record.get("metadata")
    if isinstance(meta, dict) and meta.get("language"):
        return str(meta["language"])
    return str(record.get("language") or UNKNOWN_LANGUAGE)


def _iter_jsonl(path: Path) -> Iterator[Document]:
    with _open_text(path) as f:
        for lineno, line in enumerate(f):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise CorpusError(f"{path}:{lineno + 1}: not valid JSON ({exc})") from None
            if not isinstance(record, dict):
                raise CorpusError(f"{path}:{lineno + 1}: not a JSON object (a {type(record).__name__})")
            text = record.get("text")
            if not isinstance(text, str):
                raise CorpusError(f"{path}:{lineno + 1}: no string field 'text'")
            if "\\u" in line and _lone_surrogate(text):  # only a \uD800-\uDFFF escape makes one
                raise CorpusError(
                    f"{path}:{lineno + 1}: 'text' holds a lone surrogate escape (\\uD800-\\uDFFF): not UTF-8"
                )
            yield Document(text, str(record.get("id") or f"{path.name}:{lineno}"), _language(record))


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _iter_parquet(path: Path) -> Iterator[Document]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    if "text" not in names:
        raise CorpusError(f"{path}: no column 'text'")
    columns = [c for c in ("text", "id", "metadata", "language") if c in names]
    row = 0
    for batch in pf.iter_batches(batch_size=1024, columns=columns):
        for record in batch.to_pylist():
            text = record.get("text")
            if not isinstance(text, str):  # as for JSONL: a row without text is an error, not a silent skip
                raise CorpusError(f"{path}: row {row}: no string 'text' (a {type(text).__name__})")
            yield Document(text, str(record.get("id") or f"{path.name}:{row}"), _language(record))
            row += 1


def _iter_text(path: Path) -> Iterator[Document]:
    with _open_text(path) as f:
        yield Document(f.read(), path.name, UNKNOWN_LANGUAGE)


def _read_errors() -> tuple[type[BaseException], ...]:
    """What a corrupt, cut or unreadable file raises while it is read: gzip/zlib, zstd, Parquet, the OS.

    zstandard and pyarrow are looked up only if a reader already imported them (importing pyarrow costs ~0.3 s).
    """
    errors: list[type[BaseException]] = [OSError, EOFError, zlib.error]
    if "zstandard" in sys.modules:
        errors.append(sys.modules["zstandard"].ZstdError)
    if "pyarrow" in sys.modules:
        errors.append(sys.modules["pyarrow"].ArrowException)
    return tuple(errors)


def iter_documents(files: Iterable[Path], on_file_done: Callable[[Path], None] | None = None) -> Iterator[Document]:
    """Every non-empty document of every file, in file order then line order.

    A file that cannot be read (not gzip, cut short, not Parquet, no permission) stops the stage with a
    :class:`CorpusError` naming it: the library's own message alone ("Not a gzipped file (b'ga')") does not
    say which of a thousand files is broken.
    """
    readers = {"jsonl": _iter_jsonl, "parquet": _iter_parquet, "text": _iter_text}
    for path in files:
        try:
            for doc in readers[_kind(path) or "text"](path):
                if doc.text:
                    yield doc
        except CorpusError:
            raise
        except _read_errors() as exc:
            why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            why = " ".join(repr(why)[1:-1].split())  # one line: pyarrow's messages span lines, hold raw bytes
            raise CorpusError(f"{path}: cannot be read ({why})") from None
        if on_file_done is not None:
            on_file_done(path)


def unit_hash(*parts: object) -> float:
    """A deterministic uniform number in [0, 1) from the parts (Python's hash() is salted per process)."""
    digest = hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


@dataclass
class SampleStats:
    """What the training stream read, used and held out, per language (bytes are UTF-8 bytes)."""

    docs_read: int = 0
    bytes_read: int = 0
    docs_used: int = 0
    bytes_used: int = 0
    bytes_used_per_language: dict[str, int] = field(default_factory=dict)
    heldout_docs: int = 0
    budget_reached: bool = False


def training_batches(
    docs: Iterable[Document],
    *,
    language_weights: dict[str, float],
    heldout_fraction: float,
    heldout_bytes: int,
    byte_budget: int | None,
    seed: int,
    batch_docs: int,
    stats: SampleStats,
    heldout: dict[str, list[str]],
) -> Iterator[list[str]]:
    """Batches of training texts, sampled by language, stopping at the byte budget.

    A document whose hash falls under ``heldout_fraction`` is never trained on; up to ``heldout_bytes`` of
    such text per language is collected in ``heldout`` for the report. A language weight w uses a document
    floor(w) times plus once more with probability frac(w), so 0.3 keeps ~30% and 2.5 uses ~2.5 copies.
    """
    heldout_size: dict[str, int] = {}
    batch: list[str] = []
    for doc in docs:
        n_bytes = len(doc.text.encode("utf-8"))
        stats.docs_read += 1
        stats.bytes_read += n_bytes
        if heldout_fraction > 0 and unit_hash(seed, "heldout", doc.id) < heldout_fraction:
            stats.heldout_docs += 1
            if heldout_size.get(doc.language, 0) < heldout_bytes:
                heldout.setdefault(doc.language, []).append(doc.text)
                heldout_size[doc.language] = heldout_size.get(doc.language, 0) + n_bytes
            continue
        weight = language_weights.get(doc.language, language_weights.get("*", 1.0))
        copies = int(weight)
        if unit_hash(seed, "lang", doc.id) < weight - copies:
            copies += 1
        for _ in range(copies):
            if byte_budget is not None and stats.bytes_used + n_bytes > byte_budget:
                stats.budget_reached = True
                break
            batch.append(doc.text)
            stats.docs_used += 1
            stats.bytes_used += n_bytes
            lang_bytes = stats.bytes_used_per_language
            lang_bytes[doc.language] = lang_bytes.get(doc.language, 0) + n_bytes
        if len(batch) >= batch_docs:
            yield batch
            batch = []
        if stats.budget_reached:
            break
    if batch:
        yield batch


def batched(docs: Iterable[Document], size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def total_size(files: Iterable[Path]) -> int:
    """On-disk bytes of the input files: the denominator of the reading progress bar."""
    return sum(p.stat().st_size for p in files)
