"""crawl2score.data.steps on real WARCs: read and extract, skip and count what is broken."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
from datatrove.data import Document

from crawl2score.data.steps import BundledLanguageFilter, LanguageRoutedFilter, WarcStreamReader


def _cc(shared_dir: Path, name: str) -> str:
    return str(shared_dir / "data" / "commoncrawl" / name)


def test_reads_and_extracts_real_common_crawl(shared_dir):
    from datatrove.pipeline.extractors import Trafilatura

    reader = WarcStreamReader([_cc(shared_dir, "CC-MAIN-2020-34-sample16.warc.gz")])
    docs = list(reader.run())
    assert len(docs) == 16  # README: 16 html responses
    assert all(d.metadata["url"].startswith("http") for d in docs)
    extracted = list(Trafilatura(favour_precision=True, deduplicate=False).run(iter(docs)))
    assert len(extracted) >= 8 and all(d.text and "<html" not in d.text.lower() for d in extracted)
    langs = [BundledLanguageFilter(["en", "zh"], 0.65).filter(d) for d in extracted]
    assert sum(bool(x) for x in langs) >= 5  # 11 zh + 1 en per the README


def test_whirlwind_single_page(shared_dir):
    docs = list(WarcStreamReader([_cc(shared_dir, "CC-MAIN-2024-22-whirlwind.warc.gz")]).run())
    assert len(docs) == 1 and "wikipedia.org" in docs[0].metadata["url"]


def test_truncated_file_is_counted_not_fatal(shared_dir, tmp_path):
    data = Path(_cc(shared_dir, "CC-MAIN-2020-34-sample16.warc.gz")).read_bytes()
    cut = tmp_path / "truncated.warc.gz"
    cut.write_bytes(data[: len(data) // 2])
    junk = tmp_path / "junk.warc.gz"
    junk.write_bytes(gzip.compress(b"this is not a WARC file at all\r\n" * 10))
    good = _cc(shared_dir, "CC-MAIN-2024-22-whirlwind.warc.gz")
    reader = WarcStreamReader([str(cut), str(junk), good])
    docs = list(reader.run())
    assert 1 <= len(docs) < 17  # what came before the cut, plus the good file
    stats = reader.stats.stats
    assert stats["corrupt_files"].total == 2
    assert any("whirlwind" in d.metadata["url"] or "Escopete" in d.metadata["url"] for d in docs)


def _warc(records: list[tuple[str, bytes, str]]) -> bytes:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=True)
    for url, payload, ctype in records:
        headers = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(payload), http_headers=headers))
    return buf.getvalue()


def test_huge_and_non_html_records_are_skipped(tmp_path):
    page = b"<html><body><p>hello</p></body></html>"
    path = tmp_path / "mixed.warc.gz"
    path.write_bytes(
        _warc(
            [
                ("http://a.test/1", page, "text/html"),
                ("http://a.test/2", b"\x89PNG" + b"\0" * 100, "image/png"),
                ("http://a.test/3", b"<html>" + b"x" * 5000 + b"</html>", "text/html"),
            ]
        )
    )
    reader = WarcStreamReader([str(path)], max_record_bytes=2048)
    docs = list(reader.run())
    assert [d.metadata["url"] for d in docs] == ["http://a.test/1"]
    assert reader.stats.stats["skipped_huge"].total == 1
    assert reader.stats.stats["skipped_non_html"].total == 1


def test_declared_html_that_starts_with_markup_is_read_without_sniffing(tmp_path):
    """Without a crawler-identified payload type, a body the server declares HTML and that opens with markup
    is HTML (libmagic calls a bare fragment text/plain and datatrove would drop it); declared HTML that is
    empty, binary, an XML feed or server-side source is still sniffed, and dropped."""
    import magic

    fragment = b"\xef\xbb\xbf  <p>hello from a fragment</p>"
    assert magic.from_buffer(fragment, mime=True) != "text/html"
    path = tmp_path / "declared.warc.gz"
    path.write_bytes(
        _warc(
            [
                ("http://a.test/fragment", fragment, "text/html; charset=utf-8"),
                ("http://a.test/empty", b"", "text/html"),
                ("http://a.test/png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "text/html"),
                ("http://a.test/feed", b'<?xml version="1.0"?><rss><channel></channel></rss>', "text/html"),
                ("http://a.test/jsp", b'<%@ page language="java" %>', "text/html"),
                ("http://a.test/page", b"<!DOCTYPE html><html><body>hi</body></html>", "application/xhtml+xml"),
            ]
        )
    )
    docs = list(WarcStreamReader([str(path)]).run())
    assert [d.metadata["url"] for d in docs] == ["http://a.test/fragment", "http://a.test/page"]
    assert docs[0].text == fragment.decode("utf-8")


def test_records_interleave_when_fewer_files_than_tasks(small_sample):
    path = str(small_sample / "sample.warc.gz")
    ranks = [{d.id for d in WarcStreamReader([path]).run(rank=r, world_size=2)} for r in range(2)]
    whole = {d.id for d in WarcStreamReader([path]).run()}
    assert ranks[0] and ranks[1] and not ranks[0] & ranks[1] and ranks[0] | ranks[1] == whole


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_language_routing(lang):
    class DropAll(LanguageRoutedFilter):
        pass

    from datatrove.pipeline.filters import LambdaFilter

    routed = LanguageRoutedFilter("x", {lang: LambdaFilter(lambda d: False)})
    doc = Document(text="t", id="1", metadata={"language": lang})
    other = Document(text="t", id="2", metadata={"language": "de"})
    assert routed.filter(doc) == (False, f"{lang}_filtered")
    assert routed.filter(other) is True


@pytest.mark.parametrize(("level", "xfl"), [(1, 4), (6, 0)])
def test_gzip_jsonl_writer_writes_its_level_and_reads_back(tmp_path, level, xfl):
    """The header's XFL byte records the level class (4: fastest, 0: default, 2: best); datatrove's reader
    infers gzip from the name, whatever the level."""
    from datatrove.pipeline.readers import JsonlReader

    from crawl2score.data.steps import GzipJsonlWriter

    docs = [Document(text=f"page {i} " * 50, id=str(i), metadata={"language": "en"}) for i in range(20)]
    with GzipJsonlWriter(str(tmp_path), level=level) as writer:
        for doc in docs:
            writer.write(doc, rank=3)
    path = tmp_path / "00003.jsonl.gz"
    assert path.read_bytes()[8] == xfl
    back = list(JsonlReader(str(tmp_path)).run())
    assert [(d.id, d.text, d.metadata["language"]) for d in back] == [(d.id, d.text, "en") for d in docs]


def test_gzip_jsonl_writer_rejects_other_levels(tmp_path):
    from crawl2score.data.steps import GzipJsonlWriter

    with pytest.raises(ValueError, match="gzip level 9"):
        GzipJsonlWriter(str(tmp_path), level=9)
