"""WarcStreamReader on broken WARC files: never an exception out of the reader, every record accounted for,
memory bounded per record.

Accounting: each response record the reader reaches ends as a document or one of `skipped_huge`,
`skipped_non_html`, `skipped_undecodable`; a file the reader cannot finish counts once in `corrupt_files`.
"""

from __future__ import annotations

import gzip
import io
import random
import tracemalloc
import zlib
from pathlib import Path

import pytest

from crawl2score.data.steps import WarcStreamReader

SKIPS = ("skipped_huge", "skipped_non_html", "skipped_undecodable", "skipped_malformed")


def _stats(reader: WarcStreamReader) -> dict[str, int]:
    return {k: v.total for k, v in reader.stats.stats.items()}


def _read(paths: list[Path], **kw) -> tuple[list, dict[str, int]]:
    reader = WarcStreamReader([str(p) for p in paths], **kw)
    docs = list(reader.run())
    return docs, _stats(reader)


def _read_traced(path: Path) -> tuple[list, dict[str, int], int]:
    """`_read` of one file, and the peak bytes Python allocated meanwhile (tracemalloc)."""
    tracemalloc.start()
    try:
        docs, stats = _read([path])
        return docs, stats, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _assert_accounted(docs: list, stats: dict[str, int]) -> None:
    assert stats.get("records", 0) == len(docs) + sum(stats.get(k, 0) for k in SKIPS), stats


def _record(url: str, payload: bytes, http_headers: str, content_length: int | None = None) -> bytes:
    """One uncompressed WARC response record; `content_length` may lie."""
    block = http_headers.encode() + b"\r\n" + payload
    length = len(block) if content_length is None else content_length
    head = (
        "WARC/1.0\r\nWARC-Type: response\r\n"
        f"WARC-Record-ID: <urn:uuid:{zlib.crc32(url.encode()):08x}-0000-4000-8000-000000000000>\r\n"
        f"WARC-Date: 2024-03-01T00:00:00Z\r\nWARC-Target-URI: {url}\r\n"
        f"Content-Type: application/http; msgtype=response\r\nContent-Length: {length}\r\n\r\n"
    )
    return head.encode() + block + b"\r\n\r\n"


def _http(ctype: str, extra: str = "") -> str:
    return f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n{extra}"


PAGE = b"<html><body><p>" + b"A plain English sentence for the page. " * 20 + b"</p></body></html>"


def _members(records: list[bytes]) -> bytes:
    return b"".join(gzip.compress(r) for r in records)  # one gzip member per record, as Common Crawl writes


def test_wrong_charsets_and_binary_payloads_are_counted(tmp_path):
    rng = random.Random(0)
    records = [
        _record("http://t.test/ok", PAGE, _http("text/html; charset=utf-8")),
        # declared UTF-8, really GBK: decoded by detection, not dropped
        _record("http://t.test/gbk", "<p>中文网页的内容在这里。</p>".encode("gbk"), _http("text/html; charset=utf-8")),
        # a charset name no codec knows
        _record("http://t.test/bogus", "<p>caf\xe9</p>".encode("latin-1"), _http("text/html; charset=x-nonsense")),
        # random bytes labelled as HTML, and random bytes with no type at all
        _record("http://t.test/bin", bytes(rng.getrandbits(8) for _ in range(4000)), _http("text/html")),
        _record("http://t.test/bin2", bytes(rng.getrandbits(8) for _ in range(4000)), "HTTP/1.1 200 OK\r\n"),
        # NUL bytes inside otherwise valid HTML
        _record("http://t.test/nul", PAGE.replace(b"plain", b"\0\0\0"), _http("text/html")),
    ]
    path = tmp_path / "charsets.warc.gz"
    path.write_bytes(_members(records))
    docs, stats = _read([path])
    _assert_accounted(docs, stats)
    assert stats["records"] == len(records) and not stats.get("corrupt_files")
    texts = {d.metadata["url"]: d.text for d in docs}
    assert "http://t.test/ok" in texts
    # An unknown charset name is ignored (as datatrove does): not UTF-8, so decoded by detection.
    assert "café" in texts["http://t.test/bogus"]
    assert stats.get("skipped_undecodable", 0) >= 1  # what cannot be decoded is counted, not passed on
    assert all(isinstance(d.text, str) for d in docs)


@pytest.mark.parametrize("lie", [-500, +500, 10**9])
def test_wrong_content_length_is_contained(tmp_path, lie):
    """Too short: warcio skips the rest of the gzip member and the next record is read. Too long: the next
    record is swallowed and the file ends as corrupt (or the record is skipped as huge)."""
    good = _record("http://t.test/a", PAGE, _http("text/html"))
    block_len = len(_http("text/html").encode() + b"\r\n" + PAGE)
    bad = _record("http://t.test/b", PAGE, _http("text/html"), content_length=block_len + lie)
    path = tmp_path / "lengths.warc.gz"
    path.write_bytes(_members([good, bad, good.replace(b"t.test/a", b"t.test/c")]))
    docs, stats = _read([path])
    _assert_accounted(docs, stats)
    urls = {d.metadata["url"] for d in docs}
    assert "http://t.test/a" in urls
    if lie < 0:
        assert "http://t.test/c" in urls
    else:
        assert stats.get("corrupt_files", 0) + stats.get("skipped_huge", 0) >= 1  # noticed, not silent


def test_100_mb_record_is_skipped_with_bounded_memory(tmp_path):
    """A 100 MB record (streamed into the gzip, never held whole here) between two normal pages."""
    path = tmp_path / "huge.warc.gz"
    size = 100 * 2**20
    headers = _http("text/html").encode() + b"\r\n"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(_record("http://t.test/before", PAGE, _http("text/html")))
    with open(path, "ab") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as f:
        head = _record("http://t.test/huge", b"", _http("text/html"), content_length=len(headers) + size)
        f.write(head[: -len(b"\r\n\r\n")])
        chunk = b"<p>" + b"x" * (2**20 - 7) + b"</p>\n"
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(b"y" * (size % len(chunk)) + b"\r\n\r\n")
    with open(path, "ab") as raw:
        raw.write(gzip.compress(_record("http://t.test/after", PAGE, _http("text/html"))))
    docs, stats, peak = _read_traced(path)
    _assert_accounted(docs, stats)
    assert [d.metadata["url"] for d in docs] == ["http://t.test/before", "http://t.test/after"]
    assert stats["skipped_huge"] == 1 and not stats.get("corrupt_files")
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB while skipping a 100 MiB record"


def test_compressed_http_body_cannot_blow_up(tmp_path):
    """Content-Encoding: gzip with a 200 KB body that inflates to 200 MB: skipped as huge, not inflated."""
    bomb = gzip.compress(b"<p>" + b"a" * (200 * 2**20), compresslevel=9)
    rec = _record("http://t.test/bomb", bomb, _http("text/html", "Content-Encoding: gzip\r\n"))
    path = tmp_path / "bomb.warc.gz"
    path.write_bytes(_members([rec, _record("http://t.test/ok", PAGE, _http("text/html"))]))
    docs, stats, peak = _read_traced(path)
    _assert_accounted(docs, stats)
    assert [d.metadata["url"] for d in docs] == ["http://t.test/ok"] and stats["skipped_huge"] == 1
    # bounded by warcio's read block inflated (~1000x), not by the 200 MiB the body inflates to
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.1f} MiB on a gzip bomb"


def _mutations(data: bytes, rng: random.Random) -> list[tuple[str, bytes]]:
    """Truncations, byte flips in the gzip stream, and byte flips in the WARC text re-compressed (so the
    parser, not zlib, meets them)."""
    plain = gzip.decompress(data)
    out = []
    for i in range(6):
        out.append((f"truncated-{i}", data[: rng.randrange(1, len(data))]))
    for i in range(6):
        b = bytearray(data)
        for _ in range(rng.randint(1, 20)):
            b[rng.randrange(len(b))] = rng.getrandbits(8)
        out.append((f"gzip-flips-{i}", bytes(b)))
    for i in range(8):
        b = bytearray(plain)
        for _ in range(rng.randint(1, 50)):
            b[rng.randrange(len(b))] = rng.getrandbits(8)
        out.append((f"warc-flips-{i}", gzip.compress(bytes(b))))
    for i in range(4):
        cut = rng.randrange(len(plain))
        out.append((f"warc-spliced-{i}", gzip.compress(plain[:cut] + plain[cut + rng.randint(1, 5000) :])))
    out.append(("empty", b""))
    out.append(("not-gzip", b"WARC/1.0\r\n" + bytes(rng.getrandbits(8) for _ in range(3000))))
    return out


def test_fuzzed_real_warc_never_raises(shared_dir, tmp_path):
    data = (shared_dir / "data" / "commoncrawl" / "CC-MAIN-2020-34-sample16.warc.gz").read_bytes()
    rng = random.Random(15)
    for name, blob in _mutations(data, rng):
        path = tmp_path / f"{name}.warc.gz"
        path.write_bytes(blob)
        docs, stats = _read([path])  # must not raise
        _assert_accounted(docs, stats)
        assert len(docs) <= 16, name
        assert all(isinstance(d.text, str) and d.id for d in docs), name


def test_fuzzed_file_does_not_stop_the_next_one(shared_dir, tmp_path):
    data = (shared_dir / "data" / "commoncrawl" / "CC-MAIN-2020-34-sample16.warc.gz").read_bytes()
    broken = tmp_path / "broken.warc.gz"
    broken.write_bytes(gzip.compress(gzip.decompress(data)[:40_000] + b"\0garbage" * 100))
    good = shared_dir / "data" / "commoncrawl" / "CC-MAIN-2024-22-whirlwind.warc.gz"
    docs, stats = _read([broken, good])
    _assert_accounted(docs, stats)
    assert stats["corrupt_files"] == 1
    assert any("wikipedia.org" in d.metadata["url"] for d in docs)


def test_missing_warc_headers_are_counted(tmp_path):
    ok = _record("http://t.test/ok", PAGE, _http("text/html"))
    no_date = _record("http://t.test/nodate", PAGE, _http("text/html")).replace(
        b"WARC-Date: 2024-03-01T00:00:00Z\r\n", b""
    )
    no_uri = _record("http://t.test/nouri", PAGE, _http("text/html")).replace(
        b"WARC-Target-URI: http://t.test/nouri\r\n", b""
    )
    path = tmp_path / "noheaders.warc.gz"
    path.write_bytes(_members([no_date, ok, no_uri, ok]))
    docs, stats = _read([path])
    _assert_accounted(docs, stats)
    # no date: that record is skipped; no URI: warcio cannot parse on, the file ends there, counted
    assert [d.metadata["url"] for d in docs] == ["http://t.test/ok"]
    assert stats["skipped_malformed"] == 1 and stats["corrupt_files"] == 1


def test_broken_http_headers_are_counted(tmp_path):
    recs = [
        _record("http://t.test/badstatus", PAGE, "NOT-HTTP garbage line\r\nContent-Type: text/html\r\n"),
        _record("http://t.test/ok", PAGE, _http("text/html")),
    ]
    path = tmp_path / "headers.warc.gz"
    path.write_bytes(_members(recs))
    docs, stats = _read([path])
    _assert_accounted(docs, stats)
    assert "http://t.test/ok" in {d.metadata["url"] for d in docs} or stats.get("corrupt_files") == 1


def test_io_helpers_are_real():
    # the records built here parse as WARC with warcio itself (so the tests above exercise the reader)
    from warcio.archiveiterator import ArchiveIterator

    blob = _members([_record("http://t.test/ok", PAGE, _http("text/html"))])
    recs = list(ArchiveIterator(io.BytesIO(blob)))
    assert len(recs) == 1 and recs[0].rec_headers.get_header("WARC-Target-URI") == "http://t.test/ok"


@pytest.mark.parametrize("cut", [0, 10, 30, 60])  # gzip header: 10 bytes
def test_file_cut_before_its_first_record_is_counted(tmp_path, cut):
    """warcio ends quietly on an empty stream or a gzip member cut inside the first header: still counted."""
    whole = gzip.compress(_record("http://t.test/a", PAGE, _http("text/html")))
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(whole[:cut])
    docs, stats = _read([path])
    assert docs == [] and stats["corrupt_files"] == 1, stats


def test_shared_file_is_counted_once_across_tasks(tmp_path):
    """Fewer files than tasks: each task streams the file and keeps its share of records; the file's bytes
    and its corruption count once in the merged stats, not once per task."""
    data = _members([_record(f"http://t.test/{i}", PAGE, _http("text/html")) for i in range(6)])
    path = tmp_path / "one.warc.gz"
    path.write_bytes(data[: len(data) - 40])  # the last record cut short
    totals: dict[str, int] = {}
    n_docs = 0
    for rank in range(2):
        reader = WarcStreamReader([str(path)])
        n_docs += len(list(reader.run(rank=rank, world_size=2)))
        for k, v in _stats(reader).items():
            totals[k] = totals.get(k, 0) + v
    assert totals["corrupt_files"] == 1, totals
    assert totals["input_bytes"] <= len(data), totals
    assert totals["records"] == 6 and n_docs >= 5, totals  # each record once, in one task or the other
