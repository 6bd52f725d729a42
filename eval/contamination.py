"""Benchmark contamination: which problems share a 13-gram with the training corpus.

The n-gram test of GPT-3 (Brown et al. 2020, appendix C) and the DeepSeek-V3 decontamination practice:
a problem counts as contaminated when any of its 13-grams of words (lower-cased, punctuation dropped) --
or of characters for Chinese text, which has no spaces -- occurs in a training document. The corpus is the
data stage's output, `WORKDIR/data/output/*.jsonl[.gz]` (datatrove JSONL: text, id, metadata.url).

The n-gram test itself lives in `crawl2score/ngrams.py`, shared with the data stage's optional
`decontaminate` filter (`crawl2score/data/decontaminate.py`), which drops such documents before dedup.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from crawl2score.benchmarks import FILES, load_benchmark
from crawl2score.ngrams import NGRAM, ngram_index, ngrams

__all__ = ["NGRAM", "benchmark_ngrams", "contamination_report", "iter_corpus", "ngrams"]


def benchmark_ngrams(
    names: Iterable[str] = tuple(FILES), directory: str | os.PathLike[str] | None = None, n: int = NGRAM
) -> dict[str, set[tuple[str, str]]]:
    """n-gram -> {(benchmark, problem id)} over the problems of the named benchmarks."""
    items = ((name, doc) for name in names for doc in load_benchmark(name, directory))
    return ngram_index((((name, str(doc["id"])), doc["problem"]) for name, doc in items), n)


def iter_corpus(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Documents of every *.jsonl / *.jsonl.gz under `path` (a folder) or of one file."""
    path = Path(path)
    files = sorted(path.rglob("*.jsonl*")) if path.is_dir() else [path]
    for f in files:
        if not (f.name.endswith(".jsonl") or f.name.endswith(".jsonl.gz")):
            continue
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


def contamination_report(
    corpus: str | os.PathLike[str],
    names: Iterable[str] = tuple(FILES),
    directory: str | os.PathLike[str] | None = None,
    n: int = NGRAM,
    max_docs_listed: int = 20,
) -> dict[str, Any]:
    """Per benchmark: problems, contaminated problems and their share, and the overlapping documents."""
    names = list(names)
    index = benchmark_ngrams(names, directory, n)
    hits: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    docs_scanned = 0
    for doc in iter_corpus(corpus):
        docs_scanned += 1
        found: dict[tuple[str, str], str] = {}
        for g in ngrams(doc.get("text", ""), n):
            for key in index.get(g, ()):
                found.setdefault(key, g)
        for key, g in found.items():
            meta = doc.get("metadata") or {}
            hits[key].append({"doc_id": doc.get("id"), "url": meta.get("url"), "ngram": g.lstrip("\u0001")})
    report: dict[str, Any] = {"ngram": n, "docs_scanned": docs_scanned, "benchmarks": {}}
    for name in names:
        problems = [str(d["id"]) for d in load_benchmark(name, directory)]
        bad = {pid: hits[(name, pid)] for pid in problems if hits.get((name, pid))}
        report["benchmarks"][name] = {
            "problems": len(problems),
            "contaminated": len(bad),
            "share": len(bad) / len(problems) if problems else 0.0,
            "overlaps": {pid: docs[:max_docs_listed] for pid, docs in bad.items()},
        }
    return report
