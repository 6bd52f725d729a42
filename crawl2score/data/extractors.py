"""HTML → text extractors for the data stage, chosen by `data.extractor`.

Both are datatrove `BaseExtractor`s, so both get its sandbox: each page is extracted in a child process
with a per-page timeout (`data.extract_timeout_s`); a page that times out or makes the child fail is
counted (`timeout`, `broken_process`; in datatrove 0.10 an exception in the extractor ends the child, so
it counts as `broken_process`) and skipped, and a new child takes the next page.

* `trafilatura`: datatrove's `Trafilatura` with `favour_precision` (FineWeb's setting).
* `resiliparse`: Resiliparse's `extract_plain_text(main_content=True)` (from the ChatNoir project,
  Bevendorff et al.; the extractor DataComp-LM chose, Li et al. 2024). A C++ DOM walk with main-content
  heuristics: 13-26x faster than Trafilatura on real crawl pages (BENCHMARKS.md, "HTML extraction").
  datatrove 0.10 has no Resiliparse step, hence this one.
"""

from __future__ import annotations

from typing import Literal

from datatrove.pipeline.extractors.base import BaseExtractor

ExtractorName = Literal["trafilatura", "resiliparse"]
EXTRACTORS: tuple[str, ...] = ("trafilatura", "resiliparse")


class ResiliparseExtractor(BaseExtractor):
    """Main-content plain text by Resiliparse, with the options set to match what Trafilatura keeps:
    no link targets, image alt texts, form fields, `<noscript>` or comment sections (Trafilatura runs with
    `include_comments=False`); list bullets and paragraph breaks are kept, as Trafilatura keeps them."""

    name = "⛏ Resiliparse"
    _requires_dependencies = ["resiliparse"]

    def __init__(self, timeout: float = 1.0, main_content: bool = True) -> None:
        super().__init__(timeout)
        self.main_content = main_content

    def extract(self, text: str) -> str:
        from resiliparse.extract.html2text import extract_plain_text

        return extract_plain_text(
            text,
            main_content=self.main_content,
            alt_texts=False,
            links=False,
            form_fields=False,
            noscript=False,
            comments=False,
        )


def make_extractor(name: str, timeout_s: float) -> BaseExtractor:
    """The extractor step `data.extractor` names."""
    if name == "resiliparse":
        return ResiliparseExtractor(timeout=timeout_s)
    if name == "trafilatura":
        from datatrove.pipeline.extractors import Trafilatura

        # deduplicate=False: trafilatura's own paragraph LRU would depend on task order and strip repeated
        # paragraphs from later copies, turning exact duplicates into near ones; dedup is done later.
        return Trafilatura(favour_precision=True, timeout=timeout_s, deduplicate=False)
    raise ValueError(f"unknown extractor {name!r} (expected one of {', '.join(EXTRACTORS)})")
