"""Benchmark of the data stage on the embedded sample (one task, one worker, in-process).

docs/s/core is given two ways: per wall-clock second (one worker, so per core) and per CPU second of this
process and its reaped children (user + system; the extractor runs in a sandbox child process, which
`time.process_time()` alone would miss). On a shared machine the wall figure drops with the load;
the CPU figure much less, so it is the one to compare across runs. Measures, in one run:
1. the stage (`run_data_stage`: our reader, tallies, progress, publishing);
2. plain datatrove running the same blocks (its `WarcReader`, the same extractor, language model, filters,
   datatrove's own `MinhashDedupSignature`, bare `LocalPipelineExecutor`s, no tallies/progress/publish) —
   the ratio is our overhead (both after a warm-up run on 100 other pages, which loads the models);
3. the MinHash signature step per document (shingles + signature, no I/O) on the stage's output:
   datatrove's step with its default spaCy tokenizer, datatrove's step with a bare `str.split` tokenizer
   (the floor for whitespace shingles in datatrove), datatrove's step with our script-aware tokenizer,
   and what the stage runs (`FastMinhashDedupSignature` + script-aware tokenizer); best of 5 rounds,
   interleaved (spaCy: one round);
4. the dedup figures (exact / near / unique) of the stage against the sample's ground truth.

    .venv/bin/python benchmarks/dedup.py [--pages 1200] [--extractor resiliparse] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from datatrove.utils.word_tokenizers import WordTokenizer


def plain_datatrove(cfg, sample_file: Path, work: Path) -> tuple[float, float]:
    """The same steps as `build_stages`, composed directly from datatrove blocks. Returns (wall, CPU) s."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.readers import WarcReader

    from crawl2score.data.minhash import FastMinhashDedupSignature
    from crawl2score.data.pipeline import StagePaths, build_stages

    paths = StagePaths(work, "plain")
    stages = build_stages(cfg, [str(sample_file)], paths)
    name, filter_stage, tasks = stages[0]
    kept = [s for s in filter_stage if "tally:" not in s.name]
    kept[0] = WarcReader(str(sample_file.parent), glob_pattern=sample_file.name)
    stages[0] = (name, kept, tasks)
    start, cpu = time.perf_counter(), cpu_seconds()
    for name, pipeline, tasks in stages:
        pipeline = [s for s in pipeline if "tally:" not in s.name]
        pipeline = [
            MinhashDedupSignature(s.output_folder, s.config, language=s.language)
            if isinstance(s, FastMinhashDedupSignature)
            else s
            for s in pipeline
        ]
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=str(paths.logs / name)).run()
    return time.perf_counter() - start, cpu_seconds() - cpu


def cpu_seconds() -> float:
    """User + system seconds of this process and its reaped children (the extractor's sandbox)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class SplitTokenizer(WordTokenizer):
    """A bare `str.split` word tokenizer: the cheapest whitespace shingles datatrove's step can have."""

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


def signature_speeds(texts: list[str], variants: dict[str, tuple[object, bool]], rounds: int = 3) -> dict:
    """Signature step docs/s on one core for each variant (tokenizer, fast step?): per wall second and per
    CPU second, best of `rounds`. Rounds are interleaved over the variants, so a load change on a shared
    machine hits all of them alike."""
    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

    from crawl2score.data.minhash import FastMinhashDedupSignature

    steps = {}
    for name, (tokenizer, fast) in variants.items():
        cls = FastMinhashDedupSignature if fast else MinhashDedupSignature
        steps[name] = cls(tempfile.mkdtemp(), language=tokenizer)
        steps[name].get_signature(steps[name].get_shingles(texts[0]))  # warm-up (spaCy load, regex build)
    best = {name: [float("inf"), float("inf")] for name in variants}
    for _ in range(rounds):
        for name, step in steps.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            for text in texts:
                step.get_signature(step.get_shingles(text))
            best[name][0] = min(best[name][0], time.perf_counter() - start)
            best[name][1] = min(best[name][1], time.process_time() - cpu_start)
    return {name: {"wall": round(len(texts) / w, 1), "cpu": round(len(texts) / c, 1)} for name, (w, c) in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1200)
    parser.add_argument("--out", default=None)
    parser.add_argument("--extractor", default=None, help="data.extractor (default: the config's)")
    args = parser.parse_args()

    from crawl2score.config.data import DataConfig
    from crawl2score.data.groundtruth import score_dedup
    from crawl2score.data.pipeline import run_data_stage
    from crawl2score.data.sample import load_manifest, write_sample
    from crawl2score.data.tokenizers import ScriptAwareTokenizer

    root = Path(tempfile.mkdtemp(prefix="c2s-bench-"))
    try:
        sample = root / "sample"
        write_sample(sample, pages=args.pages, seed=0)
        ex = {"extractor": args.extractor} if args.extractor else {}
        cfg = DataConfig(input=[str(sample / "sample.warc.gz")], executor={"tasks": 1, "workers": 1}, **ex)
        # Warm-up of both paths on 100 pages: models (fastText, spaCy, jieba's dictionary) load once per
        # process, so without it the first path measured would pay for them.
        warm = root / "warm"
        write_sample(warm, pages=100, seed=1)
        warm_cfg = DataConfig(input=[str(warm / "sample.warc.gz")], executor={"tasks": 1, "workers": 1}, **ex)
        run_data_stage(warm_cfg, root / "warm-ours")
        plain_datatrove(warm_cfg, warm / "sample.warc.gz", root / "warm-plain")

        start, cpu = time.perf_counter(), cpu_seconds()
        figures = run_data_stage(cfg, root / "ours")
        ours_s, ours_cpu = time.perf_counter() - start, cpu_seconds() - cpu
        plain_s, plain_cpu = plain_datatrove(cfg, sample / "sample.warc.gz", root / "plain")
        pages = figures["pages_read"]
        score = score_dedup(load_manifest(sample / "manifest.json"), root / "ours")

        import gzip

        texts = {"en": [], "zh": []}
        for path in sorted((root / "ours" / "data" / "output").glob("*.jsonl.gz")):
            with gzip.open(path, "rt") as f:
                for line in f:
                    doc = json.loads(line)
                    texts[doc["metadata"]["language"]].append(doc["text"])
        sig = {
            "en_datatrove_spacy": signature_speeds(texts["en"], {"x": ("en", False)}, rounds=1)["x"],
            "zh_datatrove_spacy_jieba": signature_speeds(texts["zh"], {"x": ("zh", False)}, rounds=1)["x"],
        }
        for lang, tok in (("en", "whitespace"), ("zh", "char")):
            variants = {
                f"{lang}_datatrove_split": (SplitTokenizer(), False),
                f"{lang}_datatrove_{tok}": (ScriptAwareTokenizer(), False),
                f"{lang}_ours_{tok}": (ScriptAwareTokenizer(), True),
            }
            sig.update(signature_speeds(texts[lang], variants, rounds=5))
        result = {
            "extractor": cfg.extractor,
            "pages": pages,
            "signature_docs": {lang: len(v) for lang, v in texts.items()},
            "load_average_1m": round(os.getloadavg()[0], 2),
            "stage_s": round(ours_s, 2),
            "stage_cpu_s": round(ours_cpu, 2),
            "stage_docs_per_s_per_core": round(pages / ours_s, 2),
            "stage_docs_per_cpu_s": round(pages / ours_cpu, 2),
            "plain_datatrove_s": round(plain_s, 2),
            "plain_datatrove_cpu_s": round(plain_cpu, 2),
            "plain_docs_per_s_per_core": round(pages / plain_s, 2),
            "plain_docs_per_cpu_s": round(pages / plain_cpu, 2),
            "overhead_ratio_wall": round(ours_s / plain_s, 4),
            "overhead_ratio_cpu": round(ours_cpu / plain_cpu, 4),
            "signature_docs_per_s_per_core": sig,
            "signature_ours_vs_datatrove_split_cpu": {
                "en": round(sig["en_ours_whitespace"]["cpu"] / sig["en_datatrove_split"]["cpu"], 3),
                "zh": round(sig["zh_ours_char"]["cpu"] / sig["zh_datatrove_char"]["cpu"], 3),
            },
            "dedup": {k: v for k, v in score.items() if k != "missed_groups"},
            "output_documents": figures["output_documents"],
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
