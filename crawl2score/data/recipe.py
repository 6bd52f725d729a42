"""The data stage's recipe: which datatrove steps run, in which stage, with which settings.

Eight datatrove stages run one after the other on the configured executor (each needs the previous one's
files on disk):

1. filter     WarcStreamReader → extractor (`data.extractor`: Resiliparse | Trafilatura) → language ID →
              Gopher quality → Gopher repetition → C4 → FineWeb quality → [benchmark decontamination] →
              JSONL                                                                     [tasks]
2. exact-sig  ExactDedupSignature over the filtered JSONL                               [tasks]
3. exact-find ExactFindDedups                                                           [1]
4. exact      ExactDedupFilter → JSONL                                                  [tasks]
5-8. minhash  MinhashDedupSignature [tasks] → Buckets [buckets; local: ≤ max(tasks, workers)] → Cluster [1] → Filter → output [tasks]

Filter order: FineWeb runs Gopher repetition before Gopher quality. Both only read the page (C4, which
removes lines, comes after both), so either order keeps the same pages; quality first is cheaper, as it
drops most crawl pages (short, few alphabetic words) before the n-gram counting of the repetition rules
(3x less time in the two on the real sample, BENCHMARKS.md). Only which rule a page is counted under in
`drop_reasons` can differ. Language ID reads the first `data.language_id_chars` of a page.

Quality filter settings follow FineWeb for English. For Chinese the word-based rules count jieba words
(datatrove's spaCy "zh" tokenizer mis-segments here), and rules that assume spaces are relaxed: C4's
per-line word count and word-length checks (a Chinese line is one space-separated "word"), Gopher's
average word length (Chinese words average ~1.7 characters) and English stop words (replaced by
Chinese function words), FineWeb's short-line length (30 characters of Chinese carry ~3x the text of 30
Latin ones).

Benchmark decontamination (`data.decontaminate`, off by default) drops documents sharing a 13-gram with
the eval benchmarks' problems (crawl2score/data/decontaminate.py): the same test as the eval stage's
contamination report, run before dedup so a dropped page cannot be the kept copy of a duplicate cluster.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from datatrove.pipeline.base import PipelineStep

from crawl2score.config.data import DataConfig

STEPS = (
    "read",
    "extract",
    "language",
    "gopher_quality",
    "gopher_repetition",
    "c4_quality",
    "fineweb_quality",
    "exact_dedup",
    "minhash_dedup",
)
REMOVED_STEPS = STEPS[2:]
DECONTAMINATE = "decontaminate"  # optional step between the quality filters and exact dedup
ZH_STOP_WORDS = ["的", "了", "是", "在", "和", "有", "我", "不", "这", "也", "就", "人", "都", "一", "他", "我们", "你"]


class StagePaths:
    """Where each intermediate lives; `work` is keyed so a changed config never reuses stale files."""

    def __init__(self, workdir: str | os.PathLike[str], key: str) -> None:
        self.root = Path(workdir) / "data"
        self.work = self.root / f".work-{key}"
        self.filtered = self.work / "filtered"
        self.exact_sigs = self.work / "exact-sigs"
        self.exact_dups = self.work / "exact-dups"
        self.exact_out = self.work / "exact"
        self.minhash_sigs = self.work / "minhash-sigs"
        self.minhash_buckets = self.work / "minhash-buckets"
        self.minhash_clusters = self.work / "minhash-clusters"
        self.output = self.work / "output"
        self.removed = self.work / "removed"
        self.logs = self.work / "logs"
        self.progress = self.work / "progress"


def active_steps(cfg: DataConfig) -> tuple[str, ...]:
    """STEPS with `decontaminate` before exact dedup when the config turns it on."""
    if not cfg.decontaminate:
        return STEPS
    i = STEPS.index("exact_dedup")
    return (*STEPS[:i], DECONTAMINATE, *STEPS[i:])


def decontamination_steps(cfg: DataConfig, paths: StagePaths | None) -> list[PipelineStep]:
    """The benchmark decontamination filter and its tally, or nothing when `data.decontaminate` is off."""
    if not cfg.decontaminate:
        return []
    from crawl2score.data.decontaminate import BenchmarkContaminationFilter, load_problems

    writer = _removed_writer(cfg, paths, DECONTAMINATE) if paths else None
    problems = load_problems(cfg.decontaminate_benchmarks)  # here, so a missing file fails before any work
    return [BenchmarkContaminationFilter(problems, exclusion_writer=writer), _tally(DECONTAMINATE)]


def _removed_writer(cfg: DataConfig, paths: StagePaths, step: str):
    if not cfg.keep_removed:
        return None
    from crawl2score.data.steps import GzipJsonlWriter

    return GzipJsonlWriter(str(paths.removed / step), level=1)


def _tally(step: str, clusters: bool = False) -> PipelineStep:
    from crawl2score.data.steps import LanguageTally

    return LanguageTally(step, clusters=clusters)


def quality_filters(cfg: DataConfig, paths: StagePaths | None) -> list[PipelineStep]:
    """Gopher repetition/quality, C4 and FineWeb quality, each routed per language (see module doc)."""
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter

    from crawl2score.data.gopher import CountedGopherQualityFilter, CountedGopherRepetitionFilter
    from crawl2score.data.steps import LanguageRoutedFilter
    from crawl2score.data.tokenizers import JiebaWordTokenizer, quality_tokenizer, quiet_jieba

    quiet_jieba()
    # One tokenizer per language shared by all filters, so an unchanged page is tokenized once.
    en, zh = quality_tokenizer(cfg.quality_tokenizer, "en"), JiebaWordTokenizer()
    per_lang: dict[str, dict[str, Any]] = {
        "gopher_quality": {
            "en": CountedGopherQualityFilter(language=en),
            "zh": CountedGopherQualityFilter(
                language=zh,
                min_avg_word_length=1,
                max_avg_word_length=6,
                max_non_alpha_words_ratio=0.6,  # "，" and "。" are words to jieba: ~1 in 6 tokens
                stop_words=ZH_STOP_WORDS,
            ),
        },
        "gopher_repetition": {
            "en": CountedGopherRepetitionFilter(language=en),
            "zh": CountedGopherRepetitionFilter(language=zh),
        },
        "c4_quality": {
            "en": C4QualityFilter(filter_no_terminal_punct=False, language=en),  # FineWeb's setting
            "zh": C4QualityFilter(
                filter_no_terminal_punct=False, min_words_per_line=-1, max_word_length=-1, language=zh
            ),
        },
        "fineweb_quality": {
            "en": FineWebQualityFilter(language=en),
            "zh": FineWebQualityFilter(short_line_length=10, language=zh),
        },
    }
    steps: list[PipelineStep] = []
    for step, filters in per_lang.items():
        wanted = {lang: f for lang, f in filters.items() if lang in cfg.languages}
        writer = _removed_writer(cfg, paths, step) if paths else None
        steps += [LanguageRoutedFilter(step, wanted, exclusion_writer=writer), _tally(step)]
    return steps


def minhash_config(cfg: DataConfig):
    from datatrove.pipeline.dedup.minhash import MinhashConfig

    return MinhashConfig(
        n_grams=cfg.minhash_ngram, num_buckets=cfg.minhash_buckets, hashes_per_bucket=cfg.minhash_hashes_per_bucket
    )


def build_stages(cfg: DataConfig, inputs: list[str], paths: StagePaths) -> list[tuple[str, list[PipelineStep], int]]:
    """(name, pipeline, tasks) for each datatrove stage, in order."""
    from datatrove.pipeline.dedup import (
        ExactDedupFilter,
        ExactDedupSignature,
        ExactFindDedups,
        MinhashDedupCluster,
        MinhashDedupFilter,
    )
    from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig
    from datatrove.pipeline.readers import JsonlReader

    from crawl2score.data.extractors import make_extractor
    from crawl2score.data.minhash import FastMinhashDedupSignature, GroupedMinhashDedupBuckets
    from crawl2score.data.steps import BundledLanguageFilter, GzipJsonlWriter, WarcStreamReader, doc_text
    from crawl2score.data.tokenizers import minhash_tokenizer

    tasks = cfg.executor.tasks
    limit = math.ceil(cfg.max_documents / tasks) if cfg.max_documents else -1
    exact_cfg = ExactDedupConfig(content_getter=doc_text)
    mh_cfg = minhash_config(cfg)
    filter_stage = [
        WarcStreamReader(inputs, cfg.max_record_bytes, limit=limit, progress_dir=str(paths.progress)),
        _tally("read"),
        make_extractor(cfg.extractor, cfg.extract_timeout_s),
        _tally("extract"),
        BundledLanguageFilter(
            cfg.languages,
            cfg.language_threshold,
            exclusion_writer=_removed_writer(cfg, paths, "language"),
            max_chars=cfg.language_id_chars,
        ),
        _tally("language"),
        *quality_filters(cfg, paths),
        *decontamination_steps(cfg, paths),
        GzipJsonlWriter(str(paths.filtered), level=1),
    ]
    return [
        ("filter", filter_stage, tasks),
        ("exact-sig", [JsonlReader(str(paths.filtered)), ExactDedupSignature(str(paths.exact_sigs), exact_cfg)], tasks),
        ("exact-find", [ExactFindDedups(str(paths.exact_sigs), str(paths.exact_dups), exact_cfg)], 1),
        (
            "exact",
            [
                JsonlReader(str(paths.filtered)),
                ExactDedupFilter(str(paths.exact_dups), exact_cfg, _removed_writer(cfg, paths, "exact_dedup")),
                _tally("exact_dedup"),
                GzipJsonlWriter(str(paths.exact_out), level=1),
            ],
            tasks,
        ),
        (
            "minhash-sig",
            [
                JsonlReader(str(paths.exact_out)),
                FastMinhashDedupSignature(  # datatrove's, faster text simplification (same signatures)
                    str(paths.minhash_sigs), mh_cfg, language=minhash_tokenizer(cfg.minhash_tokenizer)
                ),
            ],
            tasks,
        ),
        (
            "minhash-buckets",
            [GroupedMinhashDedupBuckets(str(paths.minhash_sigs), str(paths.minhash_buckets), config=mh_cfg)],
            # local: buckets grouped into as many tasks as can run at once (per-task set-up dominates at
            # small sizes); a cluster gets one job per bucket, datatrove's layout
            min(mh_cfg.num_buckets, max(tasks, cfg.executor.workers))
            if cfg.executor.kind == "local"
            else mh_cfg.num_buckets,
        ),
        (
            "minhash-cluster",
            [
                MinhashDedupCluster(
                    str(paths.minhash_buckets), str(paths.minhash_clusters), config=mh_cfg, save_cluster_size=True
                )
            ],
            1,
        ),
        (
            "minhash",
            [
                JsonlReader(str(paths.exact_out)),
                MinhashDedupFilter(
                    str(paths.minhash_clusters),
                    exclusion_writer=_removed_writer(cfg, paths, "minhash_dedup"),
                    load_cluster_sizes=True,
                ),
                _tally("minhash_dedup", clusters=True),
                GzipJsonlWriter(str(paths.output), level=6),
            ],
            tasks,
        ),
    ]
