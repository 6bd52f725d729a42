"""Benchmark decontamination for the data stage: drop documents that share a 13-gram with a benchmark.

`BenchmarkContaminationFilter` applies the eval stage's contamination test (`crawl2score/ngrams.py`:
13-grams of lower-cased words, plus 13-grams of CJK characters) to every document after the quality
filters and before dedup, when `data.decontaminate` is true. A document is dropped as soon as one of its
n-grams is a problem's n-gram; the drop reason is the benchmark (`dropped_<benchmark>` in stats.json's
`drop_reasons`), and the removed document, written under `WORKDIR/data/removed/decontaminate/`, carries
`metadata["contamination"]` = {benchmark, problem_id, ngram}.

The problems are read once where the pipeline is built (the benchmark files are found as the eval stage
finds them: `$CRAWL2SCORE_BENCHMARKS_DIR`, else `<repo>/../shared/data/benchmarks`) and travel with the
step to its workers; each worker builds the n-gram index on first use.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from crawl2score.ngrams import CJK_PREFIX, NGRAM, iter_ngrams, ngram_index

STEP = "decontaminate"


def load_problems(names: Iterable[str], directory: str | os.PathLike[str] | None = None) -> list[tuple[str, str, str]]:
    """(benchmark, problem id, problem text) for the named benchmarks (eval/benchmarks.py finds the files)."""
    from crawl2score.benchmarks import load_benchmark, short_name

    return [
        (short_name(name), str(doc["id"]), doc["problem"]) for name in names for doc in load_benchmark(name, directory)
    ]


class BenchmarkContaminationFilter(BaseFilter):
    """Drop a document when any of its n-grams (word or CJK character) is an n-gram of a problem."""

    name = STEP

    def __init__(
        self,
        problems: list[tuple[str, str, str]],
        n: int = NGRAM,
        exclusion_writer: DiskWriter | None = None,
    ) -> None:
        super().__init__(exclusion_writer)
        self.problems = list(problems)
        self.n = n
        self._index: dict[str, set[tuple[str, str]]] | None = None  # built in the worker, not pickled

    @property
    def index(self) -> dict[str, set[tuple[str, str]]]:
        if self._index is None:
            self._index = ngram_index((((b, pid), text) for b, pid, text in self.problems), self.n)
        return self._index

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_index"] = None
        return state

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        index = self.index
        for g in iter_ngrams(doc.text, self.n):
            keys = index.get(g)
            if keys:
                benchmark, problem_id = min(keys)
                doc.metadata["contamination"] = {
                    "benchmark": benchmark,
                    "problem_id": problem_id,
                    "ngram": g.removeprefix(CJK_PREFIX),
                }
                return False, benchmark
        return True
