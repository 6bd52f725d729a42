"""Benchmark contamination: which problems share a 13-gram with the training corpus.

The n-gram test of GPT-3 (Brown et al. 2020, appendix C) and the DeepSeek-V3 decontamination practice:
a problem counts as contaminated when any of its 13-grams of words (lower-cased, punctuation dropped) --
or of characters for Chinese text, which has no spaces -- occurs in a training document. The corpus is the
data stage's output, `WORKDIR/data/output/*.jsonl[.gz]` (datatrove JSONL: text, id, metadata.url).

`benchmark_ngrams()` is also what a data-stage filter needs to drop such documents.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from eval.benchmarks import FILES, load_benchmark

NGRAM = 13
_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def ngrams(text: str, n: int = NGRAM) -> set[str]:
    """Word n-grams of the text, plus character n-grams of its CJK characters when it has any."""
    out: set[str] = set()
    words = [w.lower() for w in _WORD_RE.findall(text)]
    out.update(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    cjk = "".join(_CJK_RE.findall(text))
    if cjk:
        out.update("\u0001" + cjk[i : i + n] for i in range(len(cjk) - n + 1))
    return out


def benchmark_ngrams(
    names: Iterable[str] = tuple(FILES), directory: str | os.PathLike[str] | None = None, n: int = NGRAM
) -> dict[str, set[tuple[str, str]]]:
    """n-gram -> {(benchmark, problem id)} over the problems (and answers) of the named benchmarks."""
    index: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for name in names:
        for doc in load_benchmark(name, directory):
            for g in ngrams(doc["problem"], n):
                index[g].add((name, str(doc["id"])))
    return index


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
