"""Resolve the data stage's inputs: local files and globs, fsspec URLs, or Common Crawl crawl ids.

A crawl id (`CC-MAIN-2024-10`) expands through `<cc_base_url>/crawl-data/<id>/warc.paths.gz`, the list
Common Crawl publishes for every crawl; each line is a path relative to the base URL. Nothing is
downloaded here beyond that list: the reader streams each WARC when it runs.
"""

from __future__ import annotations

import glob
import gzip
import logging
import os
import re
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

from crawl2score.config.data import DataConfig
from crawl2score.errors import BadInput
from crawl2score.workdir import stable_hash

CRAWL_ID = re.compile(r"^CC-MAIN-\d{4}-\d{2}$")
WARC_SUFFIXES = (".warc.gz", ".warc", ".warc.zst", ".arc.gz")


class InputError(BadInput):
    """An input that cannot be used (missing path, unknown crawl id); one line, shown by the CLI as is."""


log = logging.getLogger("crawl2score.data")
T = TypeVar("T")
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
RETRY_DELAYS_S = (0.2, 0.6, 1.8, 5.4)  # 4 retries, ~8 s in all: a server restart or a rate-limit burst


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying: HTTP 408/429/5xx, a dropped or refused connection, a timeout. A 404 or
    a 403 will not change, so it is not. fsspec's HTTP `info` turns every failure into FileNotFoundError
    raised from the real one, so the cause decides."""
    if isinstance(exc, FileNotFoundError) and exc.__cause__ is not None:
        return is_transient(exc.__cause__)
    if isinstance(exc, FileNotFoundError | PermissionError):
        return False
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
    if isinstance(status, int):
        return status in TRANSIENT_HTTP
    import aiohttp

    return isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | ConnectionError | TimeoutError)


def with_retries(fn: Callable[[], T], delays_s: tuple[float, ...] = RETRY_DELAYS_S) -> T:
    """`fn()`, retried after each delay while it fails transiently; the last failure is raised as is.
    By hand: fsspec's HTTP filesystem does not retry, and a Prefect task retry would redo the whole stage."""
    for delay in delays_s:
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            time.sleep(delay)
    return fn()


def _is_url(item: str) -> bool:
    return "://" in item and not item.startswith("file://")


def _has_magic(item: str) -> bool:
    return any(c in item for c in "*?[")


def crawl_paths(crawl_id: str, base_url: str) -> list[str]:
    """The WARC URLs of a Common Crawl crawl, from its `warc.paths.gz`."""
    import fsspec

    base = base_url.rstrip("/")
    url = f"{base}/crawl-data/{crawl_id}/warc.paths.gz"
    try:
        raw = with_retries(lambda: _read_all(fsspec, url))
    except FileNotFoundError as exc:
        if is_transient(exc):
            status = getattr(exc.__cause__, "status", None)
            why = f"HTTP {status}" if status else exc.__cause__.__class__.__name__
            tries = len(RETRY_DELAYS_S) + 1
            raise InputError(f"cannot read the path list of {crawl_id} at {url} ({why}, {tries} attempts)") from None
        raise InputError(f"unknown Common Crawl id {crawl_id}: {url} not found") from None
    except Exception as exc:  # aiohttp raises ClientResponseError for 403/5xx; keep the message to one line
        status = getattr(exc, "status", None) or getattr(exc, "code", None)
        detail = (
            f"HTTP {status}" if status else f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )
        raise InputError(f"cannot read the path list of {crawl_id} at {url} ({detail})") from None
    try:
        text = gzip.decompress(raw).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError):
        raise InputError(f"{url} is not a gzipped list of paths") from None
    return [f"{base}/{line.strip().lstrip('/')}" for line in text.splitlines() if line.strip()]


def _read_all(fsspec, url: str) -> bytes:
    with fsspec.open(url, "rb") as f:
        return f.read()


def _remote_paths(item: str) -> list[str]:
    import fsspec

    fs, _ = fsspec.core.url_to_fs(item)
    try:
        if _has_magic(item):
            found = sorted(with_retries(lambda: fs.glob(item)))
            protocol = item.split("://", 1)[0]
            return [p if "://" in p else f"{protocol}://{p}" for p in found]
        # info(), not exists(): fsspec's exists() answers False for a 503 as for a 404.
        with_retries(lambda: fs.info(item))
    except FileNotFoundError:
        raise InputError(f"input not found: {item}") from None
    except Exception as exc:
        raise InputError(f"cannot reach {item} ({exc.__class__.__name__})") from None
    return [item]


def _local_paths(item: str) -> list[str]:
    item = item.removeprefix("file://")
    if _has_magic(item):
        return sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
    path = Path(item)
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.is_file() and p.name.endswith(WARC_SUFFIXES))
    if path.is_file():
        return [str(path)]
    raise InputError(f"input not found: {item}")


GZIP_MAGIC, ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"
ZSTD_DICT_FRAME = 0x184D2A5D  # the skippable frame holding a WARC-zstd file's dictionary
ARCHIVE_STARTS = (b"WARC/", b"filedesc://")  # a WARC record; an ARC file's header record


class _Prefixed:
    """`head` then the rest of `raw`: what was read to tell the format, handed back to the reader."""

    def __init__(self, head: bytes, raw: IO[bytes]) -> None:
        self.head, self.raw = head, raw

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.raw.read(n)
        if n is None or n < 0:
            out, self.head = self.head + self.raw.read(), b""
            return out
        out, self.head = self.head[:n], self.head[n:]
        return out if len(out) == n else out + self.raw.read(n - len(out))


def zstd_stream(raw: IO[bytes]) -> IO[bytes]:
    """The uncompressed bytes of a zstd WARC (`.warc.zst`), as a stream.

    The IIPC WARC-zstd layout: one zstd frame per record, the first optionally a dictionary in a skippable
    frame (itself raw or zstd-compressed) that every record frame needs. Written here because fsspec's
    zstd codec (and warcio) know no dictionary frame; zstandard does the decompression.
    """
    import zstandard

    head = raw.read(8)
    magic = int.from_bytes(head[:4], "little") if len(head) >= 4 else 0
    dict_data = None
    if magic == ZSTD_DICT_FRAME and len(head) == 8:  # other skippable frames: zstandard skips them
        size = int.from_bytes(head[4:8], "little")
        blob = raw.read(size)
        if len(blob) != size:
            raise EOFError("zstd dictionary frame cut short")
        if blob.startswith(ZSTD_MAGIC):
            blob = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
        dict_data = zstandard.ZstdCompressionDict(blob)
        head = b""
    dctx = zstandard.ZstdDecompressor(dict_data=dict_data) if dict_data else zstandard.ZstdDecompressor()
    return dctx.stream_reader(_Prefixed(head, raw), read_across_frames=True)  # type: ignore[return-value]


def _is_zstd(head: bytes) -> bool:
    """A zstd frame or a skippable frame (a WARC-zstd dictionary) at the start of a file."""
    return head.startswith(ZSTD_MAGIC) or (
        len(head) >= 4 and 0x184D2A50 <= int.from_bytes(head[:4], "little") <= 0x184D2A5F
    )


def open_archive(raw: IO[bytes]) -> IO[bytes]:
    """`raw` as warcio reads it: gzip and plain as they are (warcio inflates gzip), zstd inflated here."""
    head = raw.read(4)
    stream = _Prefixed(head, raw)
    return zstd_stream(stream) if _is_zstd(head) else stream  # type: ignore[return-value]


def check_local_archive(path: str) -> None:
    """One line for a local file that cannot be a (W)ARC file: empty, unreadable, or something else.

    Only the first bytes are read (for gzip and zstd, the first bytes of the content), so a crawl's worth of
    local files is checked in moments; a file that is cut later is counted by the reader as `corrupt_files`.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if not head:
                raise InputError(f"{path}: empty file, not a WARC file")
            f.seek(0)
            if head.startswith(GZIP_MAGIC):
                try:
                    head = gzip.GzipFile(fileobj=f).read(16)
                except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
                    why = str(exc) or exc.__class__.__name__
                    raise InputError(f"{path}: not a readable gzip file ({why})") from None
            elif _is_zstd(head):
                try:
                    head = open_archive(f).read(16)
                except OSError:
                    raise
                except Exception as exc:  # zstandard.ZstdError and what a bad dictionary frame raises
                    why = str(exc) or exc.__class__.__name__
                    raise InputError(f"{path}: not a readable zstd file ({why})") from None
                if not head:
                    raise InputError(f"{path}: not a readable zstd file (no content: cut short?)")
            else:
                head = f.read(16)
    except OSError as exc:  # unreadable: permissions, a directory, an I/O error
        raise InputError(f"{path}: cannot read ({exc.strerror or exc.__class__.__name__})") from None
    if not head.startswith(ARCHIVE_STARTS):
        raise InputError(f"{path}: not a WARC file (it starts with {head[:16]!r}, not a WARC record)")


def resolve_inputs(cfg: DataConfig, warn: bool = True) -> list[str]:
    """Every input expanded to file paths/URLs, in order, deduplicated, cut to `max_files`.

    Raises InputError (one line) for a missing path, an unknown crawl id, an input matching nothing, a
    local file named in `input` that is empty or not a WARC file (`check_local_archive`), or local files
    found in a folder or glob of which none is one. Some bad files among good ones are logged and left to
    the reader, which counts them as `corrupt_files`; only the files kept after `max_files` are checked.
    `warn=False`: no warning lines (the CLI's check before Prefect starts; the stage's task logs them).
    """
    paths: list[str] = []
    named: dict[str, bool] = {}  # local path -> named in `input` itself (not found in a folder or glob)
    for item in cfg.input:
        if CRAWL_ID.match(item):
            found = crawl_paths(item, cfg.cc_base_url)
        elif _is_url(item):
            found = _remote_paths(item)
        else:
            found = _local_paths(item)
            one = not _has_magic(item) and os.path.isfile(item.removeprefix("file://"))
            for path in found:
                named[path] = named.get(path, False) or one
        if not found:
            raise InputError(f"input matches no files: {item}")
        paths.extend(found)
        if cfg.max_files is not None and len(paths) >= cfg.max_files:
            break
    paths = list(dict.fromkeys(paths))
    paths = paths[: cfg.max_files] if cfg.max_files is not None else paths
    bad: list[str] = []
    for path in paths:
        if path in named:
            try:
                check_local_archive(path)
            except InputError as exc:
                if named[path]:
                    raise
                bad.append(str(exc))
    if bad and len(bad) == len(paths):
        more = f" (and {len(bad) - 1} more: no input file is a WARC file)" if len(bad) > 1 else ""
        raise InputError(bad[0] + more)
    for line in bad[:10] if warn else []:
        log.warning("input: %s; the reader will count it as corrupt", line)
    if warn and len(bad) > 10:
        log.warning("input: %d more files that are not WARC files", len(bad) - 10)
    return paths


def sample_dir(workdir: str | os.PathLike[str]) -> Path:
    return Path(workdir) / "data" / "sample"


def ensure_input(cfg: DataConfig, workdir: str | os.PathLike[str]) -> list[str]:
    """The stage's input files: `cfg.input` resolved, or the embedded sample (generated once under
    WORKDIR/data/sample/ for the configured pages and seed) when no input is configured."""
    if cfg.input:
        return resolve_inputs(cfg)
    from crawl2score.data.sample import MANIFEST_NAME, SAMPLE_NAME, load_manifest, write_sample

    out = sample_dir(workdir)
    try:
        manifest = load_manifest(out / MANIFEST_NAME)
        current = manifest["pages"] == cfg.sample_pages and manifest["seed"] == cfg.sample_seed
    except (OSError, ValueError, KeyError):
        current = False
    if not current or not (out / SAMPLE_NAME).is_file():
        write_sample(out, pages=cfg.sample_pages, seed=cfg.sample_seed)
    return [str(out / SAMPLE_NAME)]


def input_fingerprint(cfg: DataConfig, paths: list[str] | None = None) -> str:
    """A key for the inputs: local files by path, size and mtime; remote ones and crawl ids by name.

    The sample is keyed by the config alone (`sample_pages`, `sample_seed` are in the stage key already).
    Remote files are not stat'ed: a crawl's files never change once published.
    """
    if not cfg.input:
        return stable_hash({"sample": [cfg.sample_pages, cfg.sample_seed]})
    items = []
    for p in paths if paths is not None else resolve_inputs(cfg):
        if _is_url(p):
            items.append(p)
        else:
            st = os.stat(p)
            items.append([os.path.abspath(p), st.st_size, int(st.st_mtime)])
    return stable_hash(items)
