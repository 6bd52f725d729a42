"""crawl2score.data.extractors: both extractors on real Common Crawl pages and through the zh/en filters."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from datatrove.data import Document

from crawl2score.config.data import DataConfig
from crawl2score.data.extractors import EXTRACTORS, ResiliparseExtractor, make_extractor
from crawl2score.data.pipeline import quality_filters
from crawl2score.data.sample import build_pages, render_html
from crawl2score.data.steps import BundledLanguageFilter, WarcStreamReader


def _extract(name: str, docs: list[Document], timeout_s: float = 5.0) -> tuple[list[Document], dict]:
    step = make_extractor(name, timeout_s)
    out = list(step.run(iter(docs)))
    return out, {k: v.total for k, v in step.stats.stats.items()}


@pytest.fixture(scope="module")
def cc_docs(shared_dir: Path) -> list[Document]:
    path = shared_dir / "data" / "commoncrawl" / "CC-MAIN-2020-34-sample16.warc.gz"
    return list(WarcStreamReader([str(path)]).run())


@pytest.mark.parametrize("name", EXTRACTORS)
def test_extracts_real_common_crawl_pages(name, cc_docs):
    html_sizes = {d.id: len(d.text) for d in cc_docs}
    out, stats = _extract(name, [d.__class__(text=d.text, id=d.id, metadata=dict(d.metadata)) for d in cc_docs])
    assert len(out) >= 8, stats
    assert all(d.text and "<html" not in d.text.lower() and "</p>" not in d.text for d in out)
    assert all(len(d.text) < html_sizes[d.id] for d in out)
    # every page is accounted for: extracted (non-empty forwarded, empty dropped) or a counted failure
    assert stats["extracted"] + stats.get("timeout", 0) + stats.get("clean_error", 0) == len(cc_docs)
    assert stats.get("forwarded", 0) == len(out)
    kept = [d for d in out if BundledLanguageFilter(["en", "zh"], 0.65).filter(d)]
    assert sum(d.metadata["language"] == "zh" for d in kept) >= 5  # 11 zh pages per the samples' README


def test_resiliparse_keeps_main_content_not_navigation():
    html = (
        "<html><body><nav><ul><li><a href='/'>Home</a></li><li><a href='/about'>About us</a></li></ul></nav>"
        "<main><article><h1>Title</h1><p>" + "A sentence of the article body that is long enough. " * 8 + "</p>"
        "<p>Second paragraph with more words in it to be sure it counts as content.</p></article></main>"
        "<footer><p>Copyright footer text</p></footer></body></html>"
    )
    text = ResiliparseExtractor().extract(html)
    assert "A sentence of the article body" in text and "Second paragraph" in text
    assert "About us" not in text and "Copyright footer" not in text


class _StallsOnMarker(ResiliparseExtractor):
    """Resiliparse, except that a page containing STALL never finishes: stands in for a pathological page."""

    def extract(self, text: str) -> str:
        if isinstance(text, str) and "STALL" in text:
            time.sleep(600)
        return super().extract(text)


def test_stalled_page_times_out_and_broken_page_is_counted(cc_docs):
    # None: Resiliparse itself raises (TypeError), as it would on any page it cannot take
    pages = [Document(text="<p>STALL</p>", id="slow"), Document(text=None, id="broken")]  # type: ignore[arg-type]
    pages.append(Document(text=cc_docs[0].text, id="fine"))
    step = _StallsOnMarker(timeout=0.5)
    out = list(step.run(iter(pages)))
    stats = {k: v.total for k, v in step.stats.stats.items()}
    assert [d.id for d in out] == ["fine"]  # the stalled child was replaced; the next page still extracts
    # datatrove 0.10 sandbox: an exception in the child ends it, counted as broken_process
    assert stats["timeout"] == 1 and stats["broken_process"] == 1 and stats["extracted"] == 1


def test_unknown_extractor_is_a_config_error():
    with pytest.raises(ValueError, match="extractor"):
        DataConfig.model_validate({"extractor": "boilerpipe"})


@pytest.mark.parametrize("name", EXTRACTORS)
def test_chinese_and_english_filters_work_after_either_extractor(name):
    """Sample pages (nav + article + footer): articles pass language ID and the jieba / spaCy quality filters,
    the planted junk does not; the same with both extractors."""
    pages = build_pages(150, seed=3)
    wanted = [p for p in pages if p.kind == "unique" and p.language in ("en", "zh")][:16]
    junk = [p for p in pages if p.kind == "junk" and p.group in ("spam_en", "spam_zh", "lorem")]
    docs = [Document(text=render_html(p), id=p.url, metadata={"kind": p.kind}) for p in wanted + junk]
    out, _ = _extract(name, docs)
    cfg = DataConfig()
    steps = [BundledLanguageFilter(cfg.languages, cfg.language_threshold), *quality_filters(cfg, None)]
    stream = iter(out)
    for step in steps:
        stream = step.run(stream)
    kept = list(stream)
    kept_ids = {d.id for d in kept}
    zh_wanted = {p.url for p in wanted if p.language == "zh"}
    en_wanted = {p.url for p in wanted if p.language == "en"}
    assert zh_wanted and en_wanted
    assert len(kept_ids & zh_wanted) >= 0.8 * len(zh_wanted), [d.text[:80] for d in out if d.id in zh_wanted]
    assert len(kept_ids & en_wanted) >= 0.8 * len(en_wanted)
    assert not kept_ids & {p.url for p in junk}
    assert all(d.metadata["language"] == ("zh" if d.id in zh_wanted else "en") for d in kept)


def test_filters_in_groups_decide_as_page_by_page(shared_dir):
    """Language ID and the quality filters take pages in groups (FILTER_BATCH, for the CPU caches): the same
    pages pass, in the same order, with the same labels and drop reasons as one page at a time, and the
    shared word tokenizers still split each page once, not once per filter."""
    from resiliparse.extract.html2text import extract_plain_text

    from crawl2score.data.steps import FILTER_BATCH

    warcs = sorted(str(p) for p in (shared_dir / "data" / "commoncrawl").glob("*.warc*"))
    pages = [d for d in WarcStreamReader(warcs).run()]
    pages += [Document(text=render_html(p), id=p.url) for p in build_pages(150, seed=3)]
    texts = [(d.id, extract_plain_text(d.text, main_content=True)) for d in pages]
    texts = [(i, t) for i, t in texts if t]
    assert len(texts) > 2 * FILTER_BATCH

    def run(batch_size: int | None) -> tuple[list[tuple[str, str]], list[dict], int]:
        cfg = DataConfig()
        steps = [BundledLanguageFilter(cfg.languages, cfg.language_threshold), *quality_filters(cfg, None)]
        filters = [step for step in steps if hasattr(step, "filter_batch")]
        assert all(step.batch_size == FILTER_BATCH for step in filters)
        if batch_size is not None:
            for step in filters:
                step.batch_size = batch_size
        calls = [0]
        tokenizers = {id(f.language): f.language for step in filters[1:] for f in step.filters.values()}
        for tok in tokenizers.values():  # count the real splits (a spy: the tokenizer still runs)
            real = tok._tokenize
            tok._tokenize = lambda text, real=real: calls.__setitem__(0, calls[0] + 1) or real(text)
        stream = iter([Document(text=t, id=i) for i, t in texts])
        for step in steps:
            stream = step.run(stream)
        kept = [(d.id, d.metadata["language"]) for d in stream]
        stats = [{k: v.total for k, v in s.stats.stats.items() if k != "batches"} for s in steps]
        return kept, stats, calls[0]

    grouped, one_by_one = run(None), run(1)
    assert any(s.get("dropped", 0) for s in grouped[1])
    assert grouped[:2] == one_by_one[:2]
    assert 0 < grouped[2] == one_by_one[2]
