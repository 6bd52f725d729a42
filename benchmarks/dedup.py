"""Benchmark of the data stage on the embedded sample (one core, so docs/s is docs/s/core).

Measures, in one run:
1. the stage (`run_data_stage`: our reader, tallies, progress, publishing) in docs/s/core;
2. plain datatrove running the same blocks (its `WarcReader`, the same extractor, language model, filters
   and dedup stages, bare `LocalPipelineExecutor`s, no tallies/progress/publish) — the ratio is our overhead;
3. MinHash signatures with datatrove's spaCy word tokenizer vs our script-aware whitespace tokenizer;
4. the dedup figures (exact / near / unique) of the stage against the sample's ground truth.

    .venv/bin/python benchmarks/dedup.py [--pages 1200] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def plain_datatrove(cfg, sample_file: Path, work: Path) -> float:
    """The same steps as `build_stages`, composed directly from datatrove blocks. Returns seconds."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import WarcReader

    from crawl2score.data.pipeline import StagePaths, build_stages

    paths = StagePaths(work, "plain")
    stages = build_stages(cfg, [str(sample_file)], paths)
    name, filter_stage, tasks = stages[0]
    kept = [s for s in filter_stage if "tally:" not in s.name]
    kept[0] = WarcReader(str(sample_file.parent), glob_pattern=sample_file.name)
    stages[0] = (name, kept, tasks)
    start = time.perf_counter()
    for name, pipeline, tasks in stages:
        pipeline = [s for s in pipeline if "tally:" not in s.name]
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=str(paths.logs / name)).run()
    return time.perf_counter() - start


def signature_speed(texts: list[str], tokenizer) -> float:
    """MinHash signature docs/s on one core (datatrove's MinhashDedupSignature shingling + hashing)."""
    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

    step = MinhashDedupSignature(tempfile.mkdtemp(), language=tokenizer)
    step.get_signature(step.get_shingles(texts[0]))  # warm-up (spaCy / model load)
    start = time.perf_counter()
    for text in texts:
        step.get_signature(step.get_shingles(text))
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1200)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from crawl2score.data.config import DataConfig
    from crawl2score.data.groundtruth import score_dedup
    from crawl2score.data.pipeline import run_data_stage
    from crawl2score.data.sample import load_manifest, write_sample
    from crawl2score.data.tokenizers import ScriptAwareTokenizer

    root = Path(tempfile.mkdtemp(prefix="c2s-bench-"))
    try:
        sample = root / "sample"
        write_sample(sample, pages=args.pages, seed=0)
        cfg = DataConfig(input=[str(sample / "sample.warc.gz")], executor={"tasks": 1, "workers": 1})

        start = time.perf_counter()
        figures = run_data_stage(cfg, root / "ours")
        ours_s = time.perf_counter() - start
        plain_s = plain_datatrove(cfg, sample / "sample.warc.gz", root / "plain")
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
            "en_spacy": signature_speed(texts["en"], "en"),
            "en_whitespace": signature_speed(texts["en"], ScriptAwareTokenizer()),
            "zh_spacy_jieba": signature_speed(texts["zh"], "zh"),
            "zh_char": signature_speed(texts["zh"], ScriptAwareTokenizer()),
        }
        result = {
            "pages": pages,
            "stage_s": round(ours_s, 2),
            "stage_docs_per_s_per_core": round(pages / ours_s, 2),
            "plain_datatrove_s": round(plain_s, 2),
            "plain_docs_per_s_per_core": round(pages / plain_s, 2),
            "overhead_ratio": round(ours_s / plain_s, 4),
            "signature_docs_per_s_per_core": {k: round(v, 1) for k, v in sig.items()},
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
