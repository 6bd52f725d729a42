"""The checker against the benchmarks' own answers, the statistics, and fuzzed outputs (real math-verify)."""

from __future__ import annotations

import json
import re
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawl2score.benchmarks import FILES, load_benchmark
from crawl2score.eval.scoring import (
    ProblemRecord,
    check,
    extract_answer,
    last_boxed,
    mean_ci95,
    pass_at_k,
    score_predictions,
    summarize,
    wilson_interval,
)

MINERVA = "Final Answer: The final answer is ${}$. I hope it is correct."


@pytest.fixture(scope="module")
def bench_dir(shared_dir):
    return str(shared_dir / "data" / "benchmarks")


def _changed(answer: str) -> str:
    """A different value: bump the first digit (9 -> 0), or a number no answer equals if there is none."""
    m = re.search(r"\d", answer)
    if m is None:
        return "2027\\sqrt{13}"
    d = str((int(m.group()) + 1) % 10)
    return answer[: m.start()] + d + answer[m.end() :]


def test_math500_reference_solutions_are_correct(bench_dir):
    """MATH solutions state their answer in a final \\boxed{}: the chat anchor."""
    docs = load_benchmark("math500", bench_dir)
    summary, records = score_predictions(
        "math500", [{"id": d["id"], "output": d["solution"]} for d in docs], benchmarks_dir=bench_dir
    )
    wrong = [r.id for r in records if not all(r.correct)]
    assert wrong == [] and summary["accuracy"] == 1.0 and summary["problems"] == 500


@pytest.mark.parametrize("name", sorted(FILES))
def test_gold_at_each_anchor_is_correct_and_changed_value_wrong(bench_dir, name):
    """All 578 gold answers verify when stated at the chat anchor and at the base anchor."""
    docs = load_benchmark(name, bench_dir)
    anchors = {"chat": "The answer is $\\boxed{{{}}}$.", "base": "So it is.\n" + MINERVA}
    for protocol, form in anchors.items():
        rows = [{"id": d["id"], "output": form.format(d["answer"])} for d in docs]
        summary, records = score_predictions(name, rows, benchmarks_dir=bench_dir, protocol=protocol)
        assert summary["accuracy"] == 1.0, (protocol, [(r.gold, r.answers) for r in records if not all(r.correct)])
        assert summary["samples"] == len(docs) and summary["timeouts"] == 0 and summary["check_errors"] == 0
        rows = [{"id": d["id"], "output": form.format(_changed(d["answer"]))} for d in docs]
        summary, records = score_predictions(name, rows, benchmarks_dir=bench_dir, protocol=protocol)
        assert summary["accuracy"] == 0.0, [(r.gold, r.answers) for r in records if any(r.correct)]
        assert summary["no_answer_rate"] == 0.0


@pytest.mark.parametrize("name", sorted(FILES))
def test_echoed_question_scores_zero(bench_dir, name):
    """The prompt sent back (chat: problem + the boxed instruction; base: Minerva's prompt) has no answer."""
    from crawl2score.eval.yaml.utils import chat_prompt, minerva_prompt

    docs = load_benchmark(name, bench_dir)
    for protocol, prompt in (("chat", chat_prompt), ("base", minerva_prompt)):
        rows = [{"id": d["id"], "output": prompt(d)} for d in docs]
        summary, _ = score_predictions(name, rows, benchmarks_dir=bench_dir, protocol=protocol)
        assert summary["accuracy"] == 0.0 and summary["no_answer_rate"] == 1.0


def test_an_answer_without_the_anchor_is_no_answer():
    assert check("204", "We compute 200 + 4 = 204").answer is None
    assert not check("204", "We compute 200 + 4 = 204").correct
    assert not check("204", "\\boxed{204}", protocol="base").correct  # base reads only the Minerva line
    assert check("204", MINERVA.format("204"), protocol="base").correct
    # a later box wins: the chat answer is stated last
    assert not check("5", "\\boxed{5} ... wait, so the answer is \\boxed{6}").correct


def test_extraction():
    assert last_boxed(r"a \boxed{1} b \boxed{\frac{1}{2}} c") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{ unbalanced") is None
    assert extract_answer("Final Answer: The final answer is $24$. I hope it is correct.", "base") == "24"
    assert extract_answer("Final Answer: The final answer is $0.5$.", "base") == "0.5"  # cut before "I hope"
    assert extract_answer("Final Answer: The final answer is $24$. I hope it is correct.", "chat") is None
    assert extract_answer(r"so \boxed{}", "chat") is None
    assert extract_answer("no answer here", "base") is None


def test_check_in_a_worker_thread_uses_the_child_process():
    out: dict = {}

    def run():
        out["ok"] = check(r"\frac{3}{4}", r"so \boxed{0.75}")
        out["bad"] = check("204", r"\boxed{205}")

    t = threading.Thread(target=run)
    t.start()
    t.join(120)
    assert out["ok"].correct and not out["bad"].correct and out["ok"].answer == "0.75"


def test_pass_at_k_matches_brute_force():
    from itertools import combinations

    n, c = 6, 2
    outcomes = [1] * c + [0] * (n - c)
    for k in range(1, n + 1):
        subsets = list(combinations(outcomes, k))
        brute = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(brute)
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 4, 1) == 1.0


def test_summary_statistics():
    recs = [
        ProblemRecord("a", "1", correct=[True, False, True, True], answers=["1", "2", "1", "1"], hit_limit=[False] * 4),
        ProblemRecord(
            "b", "2", correct=[False] * 4, answers=[None, None, "3", "4"], hit_limit=[True, True, False, False]
        ),
    ]
    s = summarize(recs)
    assert s["problems"] == 2 and s["samples"] == 8 and s["samples_per_problem"] == 4
    assert s["accuracy"] == pytest.approx(0.375)
    assert s["pass@1"] == pytest.approx(0.375) and s["pass@4"] == pytest.approx(0.5)
    assert s["no_answer_rate"] == pytest.approx(2 / 8) and s["hit_limit_rate"] == pytest.approx(2 / 8)
    lo, hi = s["ci95"]
    assert 0.0 <= lo < 0.375 < hi <= 1.0
    mean, lo, hi = mean_ci95([1.0] * 10)
    assert mean == 1.0 and hi == pytest.approx(1.0, rel=1e-12) and lo == pytest.approx(0.7225, rel=1e-3)  # width at 1
    mean, lo, hi = mean_ci95([0.0] * 30)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.1135, rel=1e-3)


def test_wilson_interval_matches_statsmodels_formula():
    """Reference values from the closed form (Brown, Cai & DasGupta 2001, eq. 4), computed by hand."""
    import math

    for p, n in [(0.5, 10), (0.1, 30), (0.97, 500)]:
        z = 1.959963984540054
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        assert wilson_interval(p, n) == pytest.approx((centre - half, centre + half), rel=1e-12)
    lo, hi = wilson_interval(0.5, 10)
    assert lo < 0.5 < hi and hi - 0.5 == pytest.approx(0.5 - lo, rel=1e-12)


def test_unknown_id_is_an_error(bench_dir):
    with pytest.raises(ValueError, match="not in"):
        score_predictions("aime24", [{"id": "nope", "output": "1"}], benchmarks_dir=bench_dir)


def test_bad_predictions_are_errors_and_partial_files_count_missing_as_wrong(bench_dir):
    docs = load_benchmark("aime24", bench_dir)
    one = [{"id": docs[0]["id"], "output": f"\\boxed{{{docs[0]['answer']}}}"}]
    with pytest.raises(ValueError, match="29 of 30 aime24 problems have no prediction"):
        score_predictions("aime24", one, benchmarks_dir=bench_dir)
    summary, records = score_predictions("aime24", one, benchmarks_dir=bench_dir, allow_partial=True)
    assert summary["problems"] == 30 and summary["missing"] == 29 and len(summary["missing_ids"]) == 29
    assert summary["accuracy"] == pytest.approx(1 / 30) and summary["samples"] == 1
    assert records[1].missing and records[1].to_dict()["n"] == 0
    with pytest.raises(ValueError, match="empty"):
        score_predictions("aime24", [], benchmarks_dir=bench_dir)
    with pytest.raises(ValueError, match="line 2: duplicate id"):
        score_predictions("aime24", one + one, benchmarks_dir=bench_dir, allow_partial=True)
    with pytest.raises(ValueError, match="line 1: 'output' must be a string, got list"):
        score_predictions("aime24", [{"id": docs[0]["id"], "output": ["1"]}], benchmarks_dir=bench_dir)
    two = [{**one[0], "sample": 0}, {**one[0], "sample": 1, "output": "no idea"}]
    summary, _ = score_predictions("aime24", two, benchmarks_dir=bench_dir, allow_partial=True)
    assert summary["samples"] == 2 and summary["accuracy"] == pytest.approx(0.5 / 30)


latexish = st.lists(
    st.sampled_from(
        list("0123456789+-*/^_{}()[]=,.$ xyabc\\")
        + ["\\boxed{", "\\frac", "\\sqrt", "\\infty", "\\cup", "\\pi", "^{", "\\left(", "\\right)"]
    ),
    max_size=60,
).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    output=st.one_of(latexish, st.text(max_size=200)),
    gold=st.sampled_from(
        ["204", r"\frac{3}{4}", r"(-\infty,-1)\cup(6,+\infty)", r"10^{2^n-n-1}", r"\left( 3, \frac{\pi}{2} \right)"]
    ),
)
def test_fuzzed_outputs_never_raise_and_respect_the_timeout(output, gold):
    start = time.monotonic()
    v = check(gold, output, timeout_s=2.0)
    assert isinstance(v.correct, bool)
    assert time.monotonic() - start < 2.0 + 1.0


@pytest.mark.parametrize(
    "output",
    [
        r"\boxed{" + "9^{" * 40 + "9" + "}" * 40 + "}",  # a power tower: sympy works for ages
        r"\boxed{99999^{99999999}}",  # one big-integer power in C code, deaf to signals
    ],
)
def test_pathological_output_times_out_cleanly(output):
    check("1", "1")  # the child is up
    start = time.monotonic()
    v = check("1", output, timeout_s=1.0)
    assert time.monotonic() - start < 3.0
    assert v.correct is False
    assert check("7", r"\boxed{7}").correct  # a fresh child after a kill


def test_score_command_prints_json(tmp_path, bench_dir, capsys):
    import argparse

    from crawl2score.commands import eval as eval_cmd

    parser = argparse.ArgumentParser()
    eval_cmd.register(parser.add_subparsers())

    def main(argv):
        args = parser.parse_args(argv)
        try:
            return args.func(args)
        except eval_cmd.CLIError as exc:
            print(exc, file=sys.stderr)
            return 2

    docs = load_benchmark("math500", bench_dir)[:3]
    preds = tmp_path / "p.jsonl"
    rows = [
        {"id": docs[0]["id"], "sample": 0, "output": docs[0]["solution"]},
        {"id": docs[0]["id"], "sample": 1, "output": "I give up", "finish_reason": "length"},
    ]
    rows += [{"id": d["id"], "output": rf"\boxed{{{d['answer']}}}"} for d in docs[1:]]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    details = tmp_path / "d.jsonl"
    argv = ["score", "--benchmark", "math500", "--predictions", str(preds), "--benchmarks-dir", bench_dir]
    assert main(argv) == 2  # 497 problems have no prediction
    assert "497 of 500 math500 problems have no prediction" in capsys.readouterr().err
    code = main([*argv, "--allow-partial", "--details", str(details)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["benchmark"] == "math500" and out["problems"] == 500 and out["samples"] == 4
    assert out["accuracy"] == pytest.approx((0.5 + 1 + 1) / 500)
    assert out["missing"] == 497 and out["hit_limit_rate"] == 1.0
    lines = [json.loads(x) for x in details.read_text().splitlines()]
    assert lines[0]["correct"] == [True, False] and lines[0]["outputs"][1] == "I give up"
    assert lines[0]["timed_out"] == [False, False] and lines[0]["errors"] == [None, None]
    assert lines[3]["missing"] is True and len(lines) == 500
    assert main(["score", "--task", "gsm8k", "--predictions", str(preds)]) == 2
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["score", "--benchmark", "math500", "--predictions", str(empty), "--benchmarks-dir", bench_dir]) == 2


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "math500.jsonl: benchmark file not found"),
        ('{"id": 1, "problem": "p", "answer": "1"}\n{"id": 2, "problem": "p", "ans', "math500.jsonl:2: not valid JSON"),
        ('{"id": 1, "answer": "1"}\n', "math500.jsonl:1: the record lacks problem (need id, problem, answer)"),
        ("[1]\n", "math500.jsonl:1: the record is not a JSON object"),
    ],
    ids=["missing", "cut-line", "no-problem", "not-object"],
)
def test_broken_benchmark_file_is_one_line_naming_file_and_line(tmp_path, content, needle):
    """A user's own benchmark folder (eval.benchmarks_dir): one BadInput line, never a KeyError traceback."""
    from crawl2score.benchmarks import BenchmarkError, load_benchmark
    from crawl2score.errors import BadInput

    if content is not None:
        (tmp_path / "math500.jsonl").write_text(content)
    with pytest.raises(BenchmarkError) as caught:
        load_benchmark("math500", tmp_path)
    assert isinstance(caught.value, BadInput) and needle in str(caught.value) and "\n" not in str(caught.value)
