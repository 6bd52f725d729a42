"""The data stage as datatrove pipelines: WARC → text → en/zh → quality filters → exact → MinHash dedup.

Eight datatrove stages run one after the other on the configured executor (each needs the previous one's
files on disk):

1. filter     WarcStreamReader → extractor (Resiliparse | Trafilatura) → language ID → Gopher repetition → Gopher quality → C4 →
              FineWeb quality → [benchmark decontamination] → JSONL                     [tasks]
2. exact-sig  ExactDedupSignature over the filtered JSONL                               [tasks]
3. exact-find ExactFindDedups                                                           [1]
4. exact      ExactDedupFilter → JSONL                                                  [tasks]
5-8. minhash  MinhashDedupSignature [tasks] → Buckets [buckets] → Cluster [1] → Filter → output [tasks]

Everything is written under `WORKDIR/data/.work-<key>/` (key = config + inputs), so a crashed run resumes
from datatrove's completion markers; `output/` and `removed/` are renamed into place only at the end, and
`stats.json` last, so a half-written output never looks complete.

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

import contextlib
import json
import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datatrove.pipeline.base import PipelineStep

from crawl2score.config.data import DataConfig, ExecutorConfig
from crawl2score.data.inputs import ensure_input, input_fingerprint
from crawl2score.workdir import atomic_write_json, stable_hash

ProgressFn = Callable[[float, str], None]

# Steps in order; each is followed by a LanguageTally named after it.
STEPS = (
    "read",
    "extract",
    "language",
    "gopher_repetition",
    "gopher_quality",
    "c4_quality",
    "fineweb_quality",
    "exact_dedup",
    "minhash_dedup",
)
REMOVED_STEPS = STEPS[2:]
DECONTAMINATE = "decontaminate"  # optional step between the quality filters and exact dedup
ZH_STOP_WORDS = ["的", "了", "是", "在", "和", "有", "我", "不", "这", "也", "就", "人", "都", "一", "他", "我们", "你"]
FILTER_STAGE_SHARE = 0.75  # share of the progress bar given to stage 1 (extraction dominates the time)


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
    from datatrove.pipeline.writers import JsonlWriter

    return JsonlWriter(str(paths.removed / step))


def _tally(step: str, clusters: bool = False) -> PipelineStep:
    from crawl2score.data.steps import LanguageTally

    return LanguageTally(step, clusters=clusters)


def quality_filters(cfg: DataConfig, paths: StagePaths | None) -> list[PipelineStep]:
    """Gopher repetition/quality, C4 and FineWeb quality, each routed per language (see module doc)."""
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    from crawl2score.data.steps import LanguageRoutedFilter
    from crawl2score.data.tokenizers import JiebaWordTokenizer, SpacyWordTokenizer, quiet_jieba

    quiet_jieba()
    # One tokenizer per language shared by all filters, so an unchanged page is tokenized once.
    en, zh = SpacyWordTokenizer("en"), JiebaWordTokenizer()
    per_lang: dict[str, dict[str, Any]] = {
        "gopher_repetition": {
            "en": GopherRepetitionFilter(language=en),
            "zh": GopherRepetitionFilter(language=zh),
        },
        "gopher_quality": {
            "en": GopherQualityFilter(language=en),
            "zh": GopherQualityFilter(
                language=zh,
                min_avg_word_length=1,
                max_avg_word_length=6,
                max_non_alpha_words_ratio=0.6,  # "，" and "。" are words to jieba: ~1 in 6 tokens
                stop_words=ZH_STOP_WORDS,
            ),
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
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
    )
    from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from crawl2score.data.extractors import make_extractor
    from crawl2score.data.minhash import FastMinhashDedupSignature
    from crawl2score.data.steps import BundledLanguageFilter, WarcStreamReader, doc_text
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
            cfg.languages, cfg.language_threshold, exclusion_writer=_removed_writer(cfg, paths, "language")
        ),
        _tally("language"),
        *quality_filters(cfg, paths),
        *decontamination_steps(cfg, paths),
        JsonlWriter(str(paths.filtered)),
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
                JsonlWriter(str(paths.exact_out)),
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
            [MinhashDedupBuckets(str(paths.minhash_sigs), str(paths.minhash_buckets), config=mh_cfg)],
            mh_cfg.num_buckets,
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
                JsonlWriter(str(paths.output)),
            ],
            tasks,
        ),
    ]


def make_executor(
    ex: ExecutorConfig, name: str, pipeline: list[PipelineStep], tasks: int, logging_dir: Path, depends=None
):
    """The datatrove executor the config names, for one stage."""
    if ex.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(
            pipeline,
            tasks=tasks,
            workers=min(ex.workers, tasks),
            logging_dir=str(logging_dir),
            start_method=ex.start_method,
        )
    if ex.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(
            pipeline,
            tasks=tasks,
            time=ex.time,
            partition=ex.partition,
            cpus_per_task=ex.cpus_per_task,
            mem_per_cpu_gb=ex.mem_per_cpu_gb,
            qos=ex.qos,
            job_name=f"crawl2score-{name}",
            venv_path=_activate_script(ex.venv_path),
            sbatch_args=ex.sbatch_args or None,
            logging_dir=str(logging_dir),
            depends=depends,
        )
    from datatrove.executor.ray import RayPipelineExecutor

    return RayPipelineExecutor(
        pipeline,
        tasks=tasks,
        workers=ex.workers,
        logging_dir=str(logging_dir),
        cpus_per_task=ex.cpus_per_task,
        mem_per_cpu_gb=ex.mem_per_cpu_gb,
        depends=depends,
    )


def _activate_script(venv_path: str | None) -> str | None:
    """datatrove writes `source <venv_path>` into the job: accept the venv folder or its activate script."""
    if venv_path is None or venv_path.rstrip("/").endswith("activate"):
        return venv_path
    return f"{venv_path.rstrip('/')}/bin/activate"


def _run_executors(cfg: DataConfig, stages, paths: StagePaths, report: ProgressFn) -> None:
    if cfg.executor.kind != "ray":
        _run_stages(cfg, stages, paths, report)
        return
    with _ray_session(cfg.executor):
        _run_stages(cfg, stages, paths, report)


@contextlib.contextmanager
def _ray_session(ex: ExecutorConfig):
    """Connect to `ray_address`, or start a local Ray (no dashboard) and shut it down afterwards.

    An already initialized Ray (a notebook, a test, a Ray job) is used as it is. A local Ray too small for
    one task's `cpus_per_task` / `mem_per_cpu_gb` would leave datatrove waiting for a placement group
    forever, so that fails here with one line; on a cluster the autoscaler may still add nodes.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    if ex.ray_address is not None:
        ray.init(address=ex.ray_address)
    else:
        ray.init(include_dashboard=False)
    try:
        if ex.ray_address is None:
            _check_ray_fits(ex, ray.cluster_resources())
        yield
    finally:
        ray.shutdown()


def _check_ray_fits(ex: ExecutorConfig, resources: dict[str, float]) -> None:
    cpus, mem_gb = resources.get("CPU", 0), resources.get("memory", 0) / 2**30
    if cpus < ex.cpus_per_task or mem_gb < ex.mem_per_cpu_gb * ex.cpus_per_task:
        raise RuntimeError(
            f"local Ray has {cpus:g} CPUs and {mem_gb:.1f} GB for tasks; one task asks for "
            f"executor.cpus_per_task={ex.cpus_per_task} and {ex.mem_per_cpu_gb * ex.cpus_per_task} GB "
            "(executor.mem_per_cpu_gb x cpus_per_task)"
        )


def _check_complete(executor, name: str) -> None:
    """Ray's executor logs a warning and returns when a task fails; later stages must not run on a part."""
    missing = executor.get_incomplete_ranks(skip_completed=True)
    if missing:
        raise RuntimeError(
            f"data: stage {name!r}: {len(missing)} of {executor.world_size} tasks did not complete "
            f"(ranks {missing[:8]}); see {executor.logging_dir.path}/logs"
        )


def _run_stages(cfg: DataConfig, stages, paths: StagePaths, report: ProgressFn) -> None:
    ex = cfg.executor
    n = len(stages)
    executors = []
    previous = None
    for i, (name, pipeline, tasks) in enumerate(stages):
        executor = make_executor(ex, name, pipeline, tasks, paths.logs / name, depends=previous)
        executors.append(executor)
        if ex.kind == "slurm":
            previous = executor  # slurm chains jobs with afterok; the last one's run() submits them all
            continue
        base = 0.0 if i == 0 else FILTER_STAGE_SHARE + (1 - FILTER_STAGE_SHARE) * (i - 1) / (n - 1)
        report(base, f"data: {name}")
        if i == 0:
            with _ProgressPoller(paths.progress, report, FILTER_STAGE_SHARE):
                executor.run()
        else:
            executor.run()
        _check_complete(executor, name)
        for folder in (paths.filtered, paths.exact_out):
            _ensure_readable(folder)
    if ex.kind == "slurm":
        executors[-1].run()
        while any(e.get_incomplete_ranks(skip_completed=True) for e in executors):
            done = sum(not e.get_incomplete_ranks(skip_completed=True) for e in executors)
            report(done / n, f"data: slurm {done}/{n} stages done")
            time.sleep(ex.poll_s)
    report(1.0, "data: done")


def _ensure_readable(folder: Path) -> None:
    """datatrove's JsonlReader raises on an empty folder; when every page was filtered out, the next
    stages should simply see no documents."""
    import gzip

    if folder.parent.exists() and not any(folder.glob("*.jsonl*")):
        folder.mkdir(parents=True, exist_ok=True)
        with gzip.open(folder / "empty.jsonl.gz", "wb"):
            pass


class _ProgressPoller:
    """Reads the reader's per-rank progress files (written from worker processes) once a second."""

    def __init__(self, folder: Path, report: ProgressFn, share: float) -> None:
        self.folder, self.report, self.share = folder, report, share
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _ProgressPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            files = done = docs = 0
            for p in self.folder.glob("*.json"):
                try:
                    state = json.loads(p.read_text())
                except (OSError, ValueError):
                    continue
                files += state["files"]
                done += state["files_done"]
                docs += state["docs"]
            if files:
                self.report(self.share * done / files, f"data: filter, {docs} pages read")


def read_step_stats(logs: Path, stage: str) -> list[dict[str, Any]]:
    """Per-step counters of one datatrove stage, summed over its tasks' `stats/<rank>.json`."""
    merged: list[dict[str, Any]] = []
    for path in sorted((logs / stage / "stats").glob("*.json")):
        for i, step in enumerate(json.loads(path.read_text())):
            if i >= len(merged):
                merged.append({"name": step["name"], "stats": {}})
            for key, value in step["stats"].items():
                total = value.get("total", 0) if isinstance(value, dict) else value
                merged[i]["stats"][key] = merged[i]["stats"].get(key, 0) + total
    return merged


def collect_stats(paths: StagePaths, cfg: DataConfig, inputs: list[str], seconds: float) -> dict[str, Any]:
    """stats.json: docs and bytes in/out per step and language, skipped input, duplicate clusters."""
    steps = (
        read_step_stats(paths.logs, "filter")
        + read_step_stats(paths.logs, "exact")
        + read_step_stats(paths.logs, "minhash")
    )
    tallies = {s["name"].split("tally:", 1)[1]: s["stats"] for s in steps if "tally:" in s["name"]}
    reader = next((s["stats"] for s in steps if "WARC stream" in s["name"]), {})
    drops: dict[str, dict[str, int]] = {}
    for s in steps:
        reasons = {k.removeprefix("dropped_"): v for k, v in s["stats"].items() if k.startswith("dropped_")}
        if reasons:
            drops[s["name"]] = reasons
    per_step = []
    prev: dict[str, Any] | None = None
    for step in active_steps(cfg):
        t = tallies.get(step, {})
        langs = sorted({k.removeprefix("docs_") for k in t if k.startswith("docs_")})
        row: dict[str, Any] = {
            "step": step,
            "docs_in": prev.get("docs", 0) if prev is not None else reader.get("records", 0),
            "docs_out": t.get("docs", 0),
            "bytes_in": prev.get("bytes", 0) if prev is not None else reader.get("input_bytes", 0),
            "bytes_out": t.get("bytes", 0),
            "by_language": {
                lang: {"docs": t.get(f"docs_{lang}", 0), "bytes": t.get(f"bytes_{lang}", 0)} for lang in langs
            },
        }
        per_step.append(row)
        prev = t
    final = tallies.get("minhash_dedup", {})
    by_step = {row["step"]: row for row in per_step}
    n_read = tallies.get("read", {}).get("docs", 0)
    return {
        "inputs": {"files": len(inputs), "paths": inputs[:20], "more": max(len(inputs) - 20, 0)},
        "input": {
            "records": reader.get("records", 0),
            "documents": n_read,
            "bytes": reader.get("input_bytes", 0),
            "skipped_huge": reader.get("skipped_huge", 0),
            "skipped_non_html": reader.get("skipped_non_html", 0),
            "skipped_undecodable": reader.get("skipped_undecodable", 0),
            "corrupt_files": reader.get("corrupt_files", 0),
        },
        "steps": per_step,
        "drop_reasons": drops,
        "dedup": {
            "exact_removed": by_step["exact_dedup"]["docs_in"] - by_step["exact_dedup"]["docs_out"],
            "exact_clusters": final.get("exact_clusters", 0),
            "near_removed": by_step["minhash_dedup"]["docs_in"] - by_step["minhash_dedup"]["docs_out"],
            "near_clusters": final.get("near_clusters", 0),
        },
        "output": {
            "documents": final.get("docs", 0),
            "bytes": final.get("bytes", 0),
            "by_language": by_step["minhash_dedup"]["by_language"],
        },
        "seconds": round(seconds, 3),
        "docs_per_s_per_core": round(n_read / max(seconds, 1e-9) / max(_cores(cfg), 1), 2),
    }


def _cores(cfg: DataConfig) -> int:
    ex = cfg.executor
    if ex.kind == "local":
        return min(ex.workers, ex.tasks, os.cpu_count() or 1)
    return ex.tasks * ex.cpus_per_task


def summary_figures(stats: dict[str, Any]) -> dict[str, Any]:
    """The flat figures for the run report and the Prefect table."""
    out = {
        "input_files": stats["inputs"]["files"],
        "pages_read": stats["input"]["documents"],
        "skipped_huge": stats["input"]["skipped_huge"],
        "skipped_non_html": stats["input"]["skipped_non_html"],
        "corrupt_files": stats["input"]["corrupt_files"],
    }
    for row in stats["steps"]:
        out[f"docs_after_{row['step']}"] = row["docs_out"]
    out.update(stats["dedup"])
    out["output_documents"] = stats["output"]["documents"]
    out["output_bytes"] = stats["output"]["bytes"]
    for lang, v in stats["output"]["by_language"].items():
        out[f"output_docs_{lang}"] = v["docs"]
    out["seconds"] = stats["seconds"]
    out["docs_per_s_per_core"] = stats["docs_per_s_per_core"]
    return out


def run_data_stage(
    cfg: DataConfig,
    workdir: str | os.PathLike[str],
    inputs: list[str] | None = None,
    on_progress: ProgressFn | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """Run the whole data stage; returns `summary_figures` (the full stats are in WORKDIR/data/stats.json).

    `inputs` defaults to `ensure_input(cfg, workdir)`; `key` (the stage key) names the resumable work dir.
    """
    report = on_progress or (lambda fraction, message: None)
    inputs = list(inputs) if inputs is not None else ensure_input(cfg, workdir)
    key = key or stable_hash({"cfg": cfg.model_dump(mode="json"), "inputs": input_fingerprint(cfg, inputs)})
    paths = StagePaths(workdir, key)
    start = time.perf_counter()
    stages = build_stages(cfg, inputs, paths)
    _run_executors(cfg, stages, paths, report)
    stats = collect_stats(paths, cfg, inputs, time.perf_counter() - start)
    publish(paths, stats)
    return summary_figures(stats)


def publish(paths: StagePaths, stats: dict[str, Any]) -> None:
    """Move output/ and removed/ into WORKDIR/data/, then stats.json, then drop the work dir.

    Each rename is atomic; the stage marker written after this (flows/_stage.py) is what says complete.
    """
    from crawl2score.workdir import atomic_dir

    root = paths.root
    (root / "stats.json").unlink(missing_ok=True)
    for name, src in (("output", paths.output), ("removed", paths.removed)):
        with atomic_dir(root / name) as tmp:
            if src.exists():
                for child in src.iterdir():
                    os.replace(child, tmp / child.name)
    optional = tuple(row["step"] for row in stats.get("steps", []) if row["step"] == DECONTAMINATE)
    for step in (*REMOVED_STEPS, *optional):
        (root / "removed" / step).mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    os.replace(paths.logs, logs)
    atomic_write_json(root / "stats.json", stats)
    shutil.rmtree(paths.work, ignore_errors=True)
