"""Benchmark decontamination in the data stage: the filter, its wiring into the pipeline and stats.json."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import pytest
from datatrove.data import Document
from datatrove.pipeline.writers import JsonlWriter

from crawl2score.data.decontaminate import BenchmarkContaminationFilter, load_problems
from crawl2score.data.pipeline import DECONTAMINATE, STEPS, StagePaths, active_steps, build_stages, collect_stats
from crawl2score.errors import BadInput

from .conftest import small_config

EN_PROBLEM = (
    "Let $x$, $y$ and $z$ be positive real numbers that satisfy the following system of equations: "
    "the sum of their logarithms base two equals one half, and their product is a perfect square."
)
ZH_PROBLEM = "设三棱锥P-ABC中，PA垂直于底面ABC，且棱AB、BP、BC、CP的长分别为1、2、3、4，求这个三棱锥的体积。"


@pytest.fixture
def bench_dir(tmp_path) -> Path:
    """A benchmarks folder in eval/benchmarks.py's layout with one English and one Chinese problem."""
    d = tmp_path / "benchmarks"
    d.mkdir()
    rows = {
        "aime2024.jsonl": {"id": "2024-I-1", "problem": EN_PROBLEM, "answer": "1"},
        "cnmo2024_en.jsonl": {"id": "CNMO-zh-0", "problem": ZH_PROBLEM, "answer": "3/4"},
    }
    for name, row in rows.items():
        (d / name).write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    return d


def _doc(text: str, i: int = 0) -> Document:
    return Document(text=text, id=f"doc-{i}", metadata={"language": "en"})


def test_problem_text_is_dropped_unrelated_kept(bench_dir):
    f = BenchmarkContaminationFilter(load_problems(["aime24", "cnmo24"], bench_dir))
    # The problem quoted in a forum post: other words around it, other case and punctuation.
    leaked = _doc("Homework help!! " + EN_PROBLEM.upper().replace(",", " ;") + " Any hints? Thanks.")
    assert f.filter(leaked) == (False, "aime24")
    assert leaked.metadata["contamination"]["problem_id"] == "2024-I-1"
    assert len(leaked.metadata["contamination"]["ngram"].split()) == 13
    # Twelve consecutive words of the problem are not a 13-gram.
    twelve = " ".join(EN_PROBLEM.split()[3:15])
    assert f.filter(_doc(f"Unrelated start. {twelve} and then something else entirely different."))
    assert f.filter(_doc("A recipe: mix the flour with two eggs, rest the dough for an hour, then bake it."))


def test_chinese_character_ngrams(bench_dir):
    f = BenchmarkContaminationFilter(load_problems(["cnmo24"], bench_dir))
    cjk = "".join(c for c in ZH_PROBLEM if "\u4e00" <= c <= "\u9fff")
    # 13 consecutive Chinese characters of the problem, split by Latin letters, digits and punctuation.
    leaked = _doc("今天的作业：" + ZH_PROBLEM[:40] + " ... 老师说明天交。")
    assert f.filter(leaked) == (False, "cnmo24")
    assert len(leaked.metadata["contamination"]["ngram"]) == 13
    assert f.filter(_doc("今天的作业：" + cjk[:12] + "。老师说明天交。"))  # 12 characters: kept
    assert f.filter(_doc("北京今天天气晴朗，最高气温二十五度，适合出门散步和运动。"))


def test_removed_documents_and_drop_stats(bench_dir, tmp_path):
    removed = tmp_path / "removed" / DECONTAMINATE
    f = BenchmarkContaminationFilter(
        load_problems(["aime24", "cnmo24"], bench_dir), exclusion_writer=JsonlWriter(str(removed))
    )
    f = pickle.loads(pickle.dumps(f))  # as shipped to a worker: the index is rebuilt there
    docs = [_doc("Read this: " + EN_PROBLEM, 0), _doc("Nothing to see here, just a plain page of text.", 1)]
    kept = list(f.run(iter(docs)))
    assert [d.id for d in kept] == ["doc-1"]
    stats = f.stats.to_dict()
    assert stats["name"].endswith(DECONTAMINATE)
    assert stats["stats"]["dropped"] == 1 and stats["stats"]["dropped_aime24"] == 1
    (out,) = removed.glob("*.jsonl*")
    with gzip.open(out, "rt") as fh:
        row = json.loads(fh.readline())
    assert row["id"] == "doc-0" and row["metadata"]["contamination"]["benchmark"] == "aime24"
    assert row["metadata"]["filter_reason"] == "aime24"


def test_eval_report_agrees_with_the_filter(bench_dir, tmp_path):
    """What the data filter keeps, the eval stage's contamination report finds clean (one shared test)."""
    from crawl2score.eval.contamination import contamination_report

    f = BenchmarkContaminationFilter(load_problems(["aime24", "cnmo24"], bench_dir))
    texts = ["Quoted: " + EN_PROBLEM, "作业：" + ZH_PROBLEM, "A page about gardening and tomatoes in spring."]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    before = contamination_report(corpus, ["aime24", "cnmo24"], bench_dir)
    assert [before["benchmarks"][b]["contaminated"] for b in ("aime24", "cnmo24")] == [1, 1]
    kept = [t for t in texts if f.filter(_doc(t)) is True]
    corpus.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(kept)))
    after = contamination_report(corpus, ["aime24", "cnmo24"], bench_dir)
    assert kept == texts[2:] and all(b["contaminated"] == 0 for b in after["benchmarks"].values())


def test_config_and_pipeline_wiring(bench_dir, tmp_path, monkeypatch):
    assert small_config().decontaminate is False
    with pytest.raises(ValueError, match="unknown benchmark"):
        small_config(decontaminate=True, decontaminate_benchmarks=["gsm8k"])
    cfg = small_config(decontaminate=True, decontaminate_benchmarks=["c2s_aime24_chat", "cnmo24"])
    assert cfg.decontaminate_benchmarks == ["aime24", "cnmo24"]
    assert active_steps(small_config()) == STEPS
    steps = active_steps(cfg)
    assert steps.index(DECONTAMINATE) == steps.index("fineweb_quality") + 1 == steps.index("exact_dedup") - 1

    monkeypatch.setenv("CRAWL2SCORE_BENCHMARKS_DIR", str(bench_dir))
    paths = StagePaths(tmp_path, "k")
    names = [type(s).__name__ for s in build_stages(cfg, ["x.warc.gz"], paths)[0][1]]
    i = names.index("BenchmarkContaminationFilter")
    assert (
        names[i - 2] == "LanguageRoutedFilter" and names[i + 1] == "LanguageTally" and names[i + 2] == "GzipJsonlWriter"
    )
    filt = build_stages(cfg, ["x.warc.gz"], paths)[0][1][i]
    assert filt.exclusion_writer is not None and {p[0] for p in filt.problems} == {"aime24", "cnmo24"}
    plain = [type(s).__name__ for s in build_stages(small_config(), ["x.warc.gz"], paths)[0][1]]
    assert "BenchmarkContaminationFilter" not in plain
    monkeypatch.setenv("CRAWL2SCORE_BENCHMARKS_DIR", str(tmp_path / "missing"))
    with pytest.raises(BadInput, match="aime2024.jsonl: benchmark file not found"):  # one line, no traceback
        build_stages(cfg, ["x.warc.gz"], paths)


def test_stats_json_counts_the_step(tmp_path):
    """collect_stats chains docs through `decontaminate` and keeps dedup figures keyed by step name."""
    cfg = small_config(decontaminate=True)
    paths = StagePaths(tmp_path, "k")
    docs = dict(zip(active_steps(cfg), [10, 10, 9, 9, 8, 8, 8, 6, 5, 4], strict=True))
    tallies = {s: {"name": f"tally:{s}", "stats": {"docs": n, "bytes": 100 * n, "docs_en": n}} for s, n in docs.items()}
    reader = {"name": "🕷 WARC stream", "stats": {"records": 10, "input_bytes": 5000}}
    decont = {
        "name": f"🔻 - FILTER: {DECONTAMINATE}",
        "stats": {"dropped": 2, "dropped_aime24": 1, "dropped_math500": 1},
    }
    stages = {
        "filter": [reader, *(tallies[s] for s in list(docs)[:7]), decont, tallies[DECONTAMINATE]],
        "exact": [tallies["exact_dedup"]],
        "minhash": [tallies["minhash_dedup"]],
    }
    for stage, rows in stages.items():
        (paths.logs / stage / "stats").mkdir(parents=True)
        (paths.logs / stage / "stats" / "00000.json").write_text(json.dumps(rows))
    stats = collect_stats(paths, cfg, ["x"], 1.0)
    row = next(r for r in stats["steps"] if r["step"] == DECONTAMINATE)
    assert (row["docs_in"], row["docs_out"]) == (8, 6)
    assert stats["drop_reasons"][f"🔻 - FILTER: {DECONTAMINATE}"] == {"aime24": 1, "math500": 1}
    assert stats["dedup"]["exact_removed"] == 1 and stats["dedup"]["near_removed"] == 1
    assert stats["output"]["documents"] == 4
