"""Helpers the task YAMLs call (`!function utils.NAME`): local data, prompts, the math-verify metric.

lm-eval imports this file by path from the YAML's folder, so it imports the project by absolute name;
run lm-eval from the repository root or with the project installed.
"""

from __future__ import annotations

from typing import Any

import datasets

from crawl2score.benchmarks import load_benchmark
from crawl2score.eval.scoring import check

# The prompt suffix DeepSeek-R1 and Qwen2.5-Math use for math in the chat protocol.
CHAT_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."


def load_dataset(benchmark: str, benchmarks_dir: str | None = None, **_metadata: Any) -> datasets.DatasetDict:
    """`custom_dataset` hook: the local JSONL as a one-split DatasetDict (`test`).

    Only `id`, `problem` and `answer` are kept (string columns in every file), so all four benchmarks
    share one schema. `benchmarks_dir` may come from `--metadata`; else $CRAWL2SCORE_BENCHMARKS_DIR.
    """
    rows = [
        {"id": str(r["id"]), "problem": r["problem"], "answer": str(r["answer"])}
        for r in load_benchmark(benchmark, benchmarks_dir)
    ]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def chat_prompt(doc: dict[str, Any]) -> str:
    """Zero-shot chat protocol (DeepSeek-V3 report §5.3, R1 usage recommendations)."""
    return f"{doc['problem']}\n{CHAT_SUFFIX}"


def minerva_prompt(doc: dict[str, Any]) -> str:
    """Minerva's format (Lewkowycz et al. 2022, arXiv 2206.14858): `Problem:` / `Solution:`."""
    return "Problem:\n" + doc["problem"] + "\n\nSolution:"


def minerva_fewshot() -> list[dict[str, Any]]:
    """The 4-shot Minerva prompt for MATH (arXiv 2206.14858, appendix D.2), as lm-eval's minerva_math uses.

    The problems come from the MATH training split, so they are none of the benchmark problems.
    """
    end = "\nFinal Answer: The final answer is ${}$. I hope it is correct."
    shots = [
        (
            "Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
            "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so $x\\ge2$, "
            "and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which "
            "gives $x<5$. Therefore, the domain of the expression is $\\boxed{[2,5)}$.",
            "[2,5)",
        ),
        (
            "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
            "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = (2)(12) = "
            "\\boxed{24}.$",
            "24",
        ),
        (
            "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how "
            "many times must Terrell lift them in order to lift the same total weight?",
            "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ pounds "
            "of weight.  If he lifts two 15-pound weights instead for $n$ times, he will lift a total of "
            "$2\\cdot15\\cdot n=30n$ pounds of weight.  Equating this to 480 pounds, we can solve for $n$:\n"
            "\\begin{align*}\n30n&=480\\\\\n\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}",
            "16",
        ),
        (
            "If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}has a "
            "solution $(x, y)$ where $x$ and $y$ are both nonzero,\nfind $\\frac{a}{b},$ assuming $b$ is nonzero.",
            "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n$$6y-9x=-\\frac{3}{2}a.$$Since we "
            "also know that $6y-9x=b$, we have\n\n$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$",
            "-\\frac{2}{3}",
        ),
    ]
    return [
        {"id": f"minerva-shot-{i}", "problem": p, "answer": a, "solution": s + end.format(a), "few_shot": "1"}
        for i, (p, s, a) in enumerate(shots)
    ]


def keep_all(resps, docs):
    """A filter that keeps every sample (lm-eval's default keeps the first of `repeats`)."""
    return resps


def process_results(doc: dict[str, Any], results: list[Any], protocol: str = "chat") -> dict[str, float]:
    """Mean Pass@1 over the problem's samples (math-verify, gold first, on the protocol's anchored answer)
    and the share without an answer."""
    samples = results[0] if results and isinstance(results[0], list) else list(results)
    verdicts = [check(doc["answer"], s, protocol=protocol) for s in samples]
    n = max(len(verdicts), 1)
    return {
        "pass_at_1": sum(v.correct for v in verdicts) / n,
        "no_answer": sum(v.answer is None for v in verdicts) / n,
    }


def process_results_chat(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    """Chat protocol: the answer is the last \\boxed{}."""
    return process_results(doc, results, "chat")


def process_results_base(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    """Base protocol: the answer is on Minerva's final-answer line."""
    return process_results(doc, results, "base")


def load_bpb_texts(
    source: str, heldout_dir: str | None = None, bpb_max_bytes: int = 200_000, **_metadata: Any
) -> datasets.DatasetDict:
    """`custom_dataset` hook of the c2s_bpb_* tasks: the source's texts (eval/bpb.py) as a `test` split."""
    from crawl2score.eval.bpb import load_texts

    rows = [{"text": t} for t in load_texts(source, heldout_dir, int(bpb_max_bytes))]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
