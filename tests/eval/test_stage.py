"""The eval stage as a Prefect flow on a tiny WORKDIR: results.json with lineage, samples, contamination."""

from __future__ import annotations

import gzip
import json
import shutil

from crawl2score.benchmarks import load_benchmark
from crawl2score.config import Config
from crawl2score.config.eval import EvalConfig
from crawl2score.eval.contamination import contamination_report, ngrams


def _corpus(path, bench_dir):
    problem = load_benchmark("aime24", bench_dir)[0]["problem"]
    docs = [
        {"id": "leak", "text": "Forum post. " + problem + " Thanks!", "metadata": {"url": "http://x/leak"}},
        {"id": "clean", "text": "Nothing to see here " * 20, "metadata": {"url": "http://x/clean"}},
        {"id": "zh", "text": "数学竞赛题目" * 5, "metadata": {"url": "http://x/zh"}},
    ]
    path.mkdir(parents=True, exist_ok=True)
    with gzip.open(path / "00000.jsonl.gz", "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


def test_ngrams_words_and_chinese_characters():
    assert len(ngrams("a b c d e f g h i j k l m", 13)) == 1
    assert len(ngrams("a b c d e f g h i j k l", 13)) == 0
    assert len(ngrams("数学竞赛题目数学竞赛题目数", 13)) == 1


def test_contamination_report_lists_overlapping_documents(tmp_path, shared_dir):
    bench = shared_dir / "data" / "benchmarks"
    _corpus(tmp_path / "out", bench)
    rep = contamination_report(tmp_path / "out", ["aime24", "math500"], bench)
    a = rep["benchmarks"]["aime24"]
    assert a["contaminated"] == 1 and a["share"] == 1 / 30
    assert [d["doc_id"] for d in a["overlaps"]["AIME2024-I-1"]] == ["leak"]
    assert rep["benchmarks"]["math500"]["contaminated"] == 0 and rep["docs_scanned"] == 3


def test_eval_flow_writes_results_with_lineage(tiny_workdir, tmp_path, shared_dir, prefect_harness):
    from crawl2score.flows.eval import eval_flow

    workdir = tmp_path / "work"
    shutil.copytree(tiny_workdir, workdir)
    bench = shared_dir / "data" / "benchmarks"
    _corpus(workdir / "data" / "output", bench)
    cfg = Config(
        workdir=str(workdir),
        eval=EvalConfig(
            benchmarks=["aime24"],
            bpb=["heldout_en", "public"],
            bpb_max_bytes=3000,
            protocol="base",
            limit=1,
            max_new_tokens=3,
            truncate_prompts=True,
            benchmarks_dir=str(bench),
        ),
    )
    first = eval_flow(config=cfg)
    assert first["skipped"] is False
    res = json.loads((workdir / "eval" / "results.json").read_text())
    run = res["checkpoints"][0]
    assert run["checkpoint"]["step"] == 1 and len(run["checkpoint"]["weights_sha256"]) == 16
    assert res["lineage"]["tokenizer_sha256"] and res["lineage"]["data_output_hash"]
    assert res["settings"]["seed"] == 1234 and res["settings"]["limit"] == 1
    assert run["results"]["aime24"]["problems"] == 1
    assert (workdir / "eval" / "step-1" / "aime24.samples.jsonl").is_file()
    assert res["contamination"]["benchmarks"]["aime24"]["contaminated"] == 1
    assert first["figures"]["aime24"]["contaminated_share"] == 1 / 30
    bpb = run["results"]["_bpb"]
    assert "no held-out text" in bpb["heldout_en"]["skipped"]  # this tokenizer dir predates held-out files
    assert bpb["public"]["bytes"] >= 3000 and 0 < bpb["public"]["bits_per_byte"]
    assert first["figures"]["bpb_public"]["unigram_bits_per_byte"] == bpb["public"]["unigram_bits_per_byte"]
    again = eval_flow(config=cfg)
    assert again["skipped"] is True and again["key"] == first["key"]


def test_learning_verdict_and_ui_rows_put_bpb_beside_math():
    from crawl2score.flows.eval import learning_verdict
    from crawl2score.tasks.eval import score_rows

    assert learning_verdict(1.29, 1.86).startswith("yes: 1.290 bits/byte is 31% below")
    assert learning_verdict(2.74, 2.89).startswith("barely")
    assert learning_verdict(7.27, 4.34).startswith("no")
    results = {
        "aime24": {"accuracy": 0.0, "ci95": [0.0, 0.11], "problems": 30, "no_answer_rate": 1.0},
        "_bpb": {
            "public": {"bits_per_byte": 7.2, "unigram_bits_per_byte": 8.5, "unigram_insample_bits_per_byte": 4.3},
            "heldout_zh": {"skipped": "no held-out text at x"},
        },
    }
    rows = score_rows("step-1", results)
    assert [r["benchmark"] for r in rows] == ["aime24", "bpb public", "bpb heldout_zh"]
    assert rows[1]["value"] == 7.2 and "in-sample 4.3" in rows[1]["ci95 / baseline"]
    assert rows[2]["ci95 / baseline"] == "no held-out text at x"
