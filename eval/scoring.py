"""Scoring math answers with math-verify, and the statistics reported for them.

* Answers come only from the protocol's anchor (DeepSeek-V3 report §5.3): the last ``\\boxed{}`` of a chat
  output, the first Minerva line "Final Answer: The final answer is X. I hope it is correct." of a base
  output (arXiv 2206.14858; lm-eval's `minerva_math` reads the same line). No anchor, no answer: an
  output that merely contains the right number (the question echoed, a cut-off derivation) scores 0.
* The checker is math-verify (`verify(gold, pred)`, gold first: the comparison is not symmetric) on the
  anchored answer; the gold answer is parsed from ``$answer$`` (the benchmarks README's check).
* Every check has one wall-clock budget (`timeout_s`, default 5 s). math-verify's own timeouts use
  ``signal.alarm``, which only works in the main thread (Prefect runs tasks in worker threads) and cannot
  stop C code (a huge integer power). So checks run in one child process: there a ``setitimer`` alarm
  bounds the whole check, and the parent kills the child if the answer is not back within the budget
  plus a second. A check that times out or raises is scored wrong, never an exception.
* Statistics: mean@n (mean over problems of the share of correct samples) with a 95% Wilson score
  interval over problems (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it over the normal
  interval, which has zero width at 0 and 1 and undercovers at small n). With several samples per
  problem the per-problem means vary less than coin flips, so the interval is conservative; the
  unbiased pass@k estimator 1 - C(n-c, k)/C(n, k) of Chen et al. (arXiv
  2107.03374) for k <= n; and the share of samples that hit the token limit or had no extractable answer.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

DEFAULT_TIMEOUT_S = 5.0


class _DropTimeoutWarning(logging.Filter):
    """math-verify warns once when its own timeouts are off; ours replace them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutWarning())


class CheckTimeout(Exception):
    """Raised inside a check when its wall-clock budget is spent."""


@dataclass
class Verdict:
    correct: bool
    answer: str | None  # the anchored final answer as written (None: no anchor, no answer)
    timed_out: bool = False
    error: str | None = None


# ---------------------------------------------------------------- extraction


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces, else None."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    i = text.find("{", idx)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


# Minerva's final-answer line (arXiv 2206.14858, appendix D.2; lm-eval minerva_math `get_unnormalized_answer`).
_MINERVA_RE = re.compile(r"Final Answer: The final answer is(.*?)(?:\. I hope it is correct\.|$)", re.MULTILINE)
PROTOCOLS = ("chat", "base")


def extract_answer(text: str, protocol: str = "chat") -> str | None:
    """The answer at the protocol's anchor, as the model wrote it; None without one.

    chat: the last ``\\boxed{}`` (a later box wins: the final answer is stated last). base: the first
    Minerva final-answer line, whose ``$...$`` delimiters are dropped (the few-shot solutions end there;
    generation stops at the next ``Problem:``).
    """
    if protocol == "chat":
        boxed = last_boxed(text)
        return boxed.strip() if boxed is not None and boxed.strip() else None
    if protocol != "base":
        raise ValueError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    m = _MINERVA_RE.search(text)
    if m is None:
        return None
    answer = m.group(1).strip().rstrip(".").strip()
    if len(answer) >= 2 and answer.startswith("$") and answer.endswith("$"):
        answer = answer.strip("$").strip()
    return answer or None


# ---------------------------------------------------------------- math-verify


# A point label before coordinates, as in CNMO's "A(\\pm 1, 0)": latex2sympy reads it as a function call and
# the whole compound answer collapses to 0 (so any prediction equal to 0 would pass). Labels are dropped
# from gold and prediction alike, only for golds that carry one.
_POINT_LABEL_RE = re.compile(r"(?<![\\A-Za-z])[A-Z]\s*(?=\()")


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    parsed = parse(f"${gold}$", [LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=None)
    if not parsed:  # a gold that is not LaTeX (never in our files): compare as a string
        return [gold.strip()]
    if str(parsed[0]) == "0" and re.search(r"[1-9]", gold):
        # A degenerate parse (a compound answer read as 0): compare the normalised strings instead.
        return [s for s in parsed if isinstance(s, str)] or [gold.strip()]
    return parsed


def _check_unbounded(gold: str, answer: str) -> bool:
    """The check of an anchored answer, without any timeout; may be slow on adversarial input."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    if _POINT_LABEL_RE.search(gold):
        gold, answer = _POINT_LABEL_RE.sub("", gold), _POINT_LABEL_RE.sub("", answer)
    # Re-boxed, so math-verify reads exactly the anchored text (its boxed extraction handles \text, units).
    pred = parse(
        f"\\boxed{{{answer}}}",
        [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
        parsing_timeout=None,
    )
    if not pred:
        return False
    return bool(verify(_parse_gold(gold), pred, timeout_seconds=None))


def _check_main_thread(gold: str, answer: str, timeout_s: float) -> Verdict:
    def on_alarm(signum: int, frame: Any) -> None:
        raise CheckTimeout

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return Verdict(_check_unbounded(gold, answer), answer)
    except CheckTimeout:
        return Verdict(False, answer, timed_out=True)
    except Exception as exc:  # noqa: BLE001 - a model output must never crash scoring
        return Verdict(False, answer, error=f"{type(exc).__name__}: {exc}"[:200])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class _Worker:
    """A child Python process that runs checks in its own main thread, one JSON line per request.

    The child bounds each check with a signal alarm (soft: it only fires between Python bytecodes); the
    parent waits `timeout_s + GRACE_S` and kills the child when that passes (hard: a big-integer power in
    C code cannot ignore it), then starts a fresh one on the next call. A plain subprocess rather than
    multiprocessing: spawn would re-import the caller's `__main__`, and fork is unsafe in a process that
    holds torch and Prefect threads.
    """

    GRACE_S = 1.0
    STARTUP_S = 120.0

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.lock = threading.Lock()

    def _start(self) -> subprocess.Popen[str]:
        if self.proc is None or self.proc.poll() is not None:
            repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
            proc = subprocess.Popen(
                [sys.executable, "-m", "crawl2score.eval.scoring", "--worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                env=env,
            )
            self.proc = proc
            if self._readline(self.STARTUP_S) != "ready":
                self.kill()
                raise RuntimeError("math-verify worker did not start")
        return self.proc

    def _readline(self, timeout_s: float) -> str | None:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        return self.proc.stdout.readline().strip() or None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def check(self, gold: str, answer: str, timeout_s: float) -> Verdict:
        with self.lock:
            try:
                proc = self._start()
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"gold": gold, "answer": answer, "timeout_s": timeout_s}) + "\n")
                proc.stdin.flush()
            except (OSError, RuntimeError) as exc:
                self.kill()
                return Verdict(False, answer, error=f"worker: {exc}")
            line = self._readline(timeout_s + self.GRACE_S)
            if line is None:
                self.kill()
                return Verdict(False, answer, timed_out=True)
            d = json.loads(line)
            return Verdict(d["correct"], d["answer"], d["timed_out"], d["error"])


_worker = _Worker()
atexit.register(_worker.kill)


def check(gold: str, output: str, timeout_s: float = DEFAULT_TIMEOUT_S, protocol: str = "chat") -> Verdict:
    """Is `output` (a whole model response) correct for the reference answer `gold`? Never raises.

    Only the answer at the protocol's anchor is checked (`extract_answer`); without one the verdict is
    wrong with `answer=None`. Thread-safe (checks from several threads queue for the one child process)
    and bounded in wall-clock time by `timeout_s` plus one second, whatever the output.
    """
    if not isinstance(output, str):
        output = "" if output is None else str(output)
    answer = extract_answer(output, protocol)
    if answer is None:
        return Verdict(False, None)
    return _worker.check(str(gold), answer, float(timeout_s))


def _serve() -> None:
    import math_verify  # noqa: F401 - import before announcing readiness, so start-up is not a check's time

    _check_main_thread("1", "1", DEFAULT_TIMEOUT_S)  # warm the parser caches
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        req = json.loads(line)
        v = _check_main_thread(req["gold"], req["answer"], float(req["timeout_s"]))
        sys.stdout.write(json.dumps(asdict(v)) + "\n")
        sys.stdout.flush()


# ---------------------------------------------------------------- statistics


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021, eq. 1), numerically stable form."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion p observed over n trials (Wilson 1927, eq. of Brown et al.
    2001 §4.1.1). Unlike the normal interval it has width at p = 0 and p = 1 and stays inside [0, 1]."""
    if n <= 0:
        raise ValueError("wilson_interval needs n >= 1")
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_ci95(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """Mean of per-problem accuracies and its 95% Wilson interval over the problems; None without problems."""
    n = len(values)
    if n == 0:
        return None, None, None
    mean = sum(values) / n
    lo, hi = wilson_interval(mean, n)
    return mean, lo, hi


@dataclass
class ProblemRecord:
    """Everything kept about one problem: what was asked, what came back, how it was judged."""

    id: str
    gold: str
    prompt: str | None = None
    outputs: list[str] = field(default_factory=list)
    answers: list[str | None] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    hit_limit: list[bool | None] = field(default_factory=list)
    timed_out: list[bool] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    missing: bool = False  # no prediction was given: counted wrong

    @property
    def n(self) -> int:
        return len(self.correct)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n"] = self.n
        d["n_correct"] = sum(self.correct)
        return d


def score_problem(
    pid: str,
    gold: str,
    outputs: Iterable[str],
    *,
    prompt: str | None = None,
    hit_limit: Iterable[bool | None] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    protocol: str = "chat",
) -> ProblemRecord:
    outputs = list(outputs)
    limits = list(hit_limit) if hit_limit is not None else [None] * len(outputs)
    rec = ProblemRecord(id=str(pid), gold=gold, prompt=prompt, outputs=outputs, hit_limit=limits)
    for out in outputs:
        v = check(gold, out, timeout_s, protocol)
        rec.answers.append(v.answer)
        rec.correct.append(v.correct)
        rec.timed_out.append(v.timed_out)
        rec.errors.append(v.error)
    return rec


def summarize(records: Sequence[ProblemRecord], ks: Iterable[int] | None = None) -> dict[str, Any]:
    """Figures for one task: problems, samples, accuracy (mean Pass@1) with 95% CI, pass@k, failure shares.

    A problem marked `missing` counts as wrong in accuracy and pass@k; one with no samples otherwise is
    left out (lm-eval never logs such a problem).
    """
    missing = [r for r in records if r.missing]
    records = [r for r in records if r.n > 0 and not r.missing]
    scored = len(records) + len(missing)
    per_problem = [sum(r.correct) / r.n for r in records] + [0.0] * len(missing)
    acc, lo, hi = mean_ci95(per_problem)
    samples = sum(r.n for r in records)
    n_min = min((r.n for r in records), default=0)
    if ks is None:
        ks = [2**i for i in range(0, 12) if 2**i <= n_min]
    pass_k = {
        f"pass@{k}": sum(pass_at_k(r.n, sum(r.correct), k) for r in records) / scored for k in ks if 1 <= k <= n_min
    }
    no_answer = sum(a is None for r in records for a in r.answers)
    limits = [h for r in records for h in r.hit_limit if h is not None]
    return {
        "problems": scored,
        "samples": samples,
        "samples_per_problem": n_min if all(r.n == n_min for r in records) else f"{n_min}+",
        "accuracy": acc,
        "ci95": [lo, hi],
        **pass_k,
        "no_answer_rate": no_answer / samples if samples else None,
        # share among the samples whose finish reason is known
        "hit_limit_rate": (sum(limits) / len(limits)) if limits else None,
        "timeouts": sum(t for r in records for t in r.timed_out),
        "check_errors": sum(e is not None for r in records for e in r.errors),
        "missing": len(missing),
    }


# ---------------------------------------------------------------- predictions files


def _hit_limit(row: dict[str, Any]) -> bool | None:
    """`finish_reason: "length"` (OpenAI/vLLM style) or `hit_limit`/`truncated` booleans; None if absent."""
    for key in ("hit_limit", "truncated"):
        if key in row and row[key] is not None:
            return bool(row[key])
    if row.get("finish_reason") is not None:
        return row["finish_reason"] == "length"
    return None


def _validate_rows(rows: Iterable[Any], docs: dict[str, Any], name: str) -> dict[str, list[dict[str, Any]]]:
    """Group rows by problem; every way a predictions file can silently skew a score is an error."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    seen: set[tuple[str, Any]] = set()
    n = 0
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or "id" not in row or "output" not in row:
            raise ValueError(f"line {n}: need an object with 'id' and 'output'")
        if not isinstance(row["output"], str):
            raise ValueError(f"line {n}: 'output' must be a string, got {type(row['output']).__name__}")
        pid = str(row["id"])
        if pid not in docs:
            raise ValueError(f"line {n}: id {pid!r} is not in {name}")
        key = (pid, row.get("sample"))
        if key in seen:
            raise ValueError(
                f"line {n}: duplicate id {pid!r} (several samples of a problem need distinct 'sample' numbers)"
            )
        seen.add(key)
        grouped.setdefault(pid, []).append(row)
    if n == 0:
        raise ValueError("no predictions (empty file)")
    return grouped


def score_predictions(
    task: str,
    rows: Iterable[dict[str, Any]],
    *,
    benchmarks_dir: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    protocol: str = "chat",
    allow_partial: bool = False,
) -> tuple[dict[str, Any], list[ProblemRecord]]:
    """Score `{"id", "output"[, "sample"]}` rows against a benchmark's gold answers.

    Returns the summary (benchmark, problems, samples, accuracy, ...) and the per-problem records. Every
    benchmark problem is scored: one without a prediction is an error, or with `allow_partial` counts as
    wrong and is listed in `missing_ids`. Empty input, unknown or duplicate ids (two rows of one problem
    without distinct `sample` numbers) and non-string outputs are errors (ValueError).
    """
    from crawl2score.benchmarks import load_benchmark, short_name

    name = short_name(task)
    docs = {str(d["id"]): d for d in load_benchmark(name, benchmarks_dir)}
    grouped = _validate_rows(rows, docs, name)
    missing = [pid for pid in docs if pid not in grouped]
    if missing and not allow_partial:
        raise ValueError(
            f"{len(missing)} of {len(docs)} {name} problems have no prediction (first: {missing[0]!r}); "
            "pass --allow-partial to score them as wrong"
        )
    records = []
    for pid, doc in docs.items():
        if pid not in grouped:
            records.append(ProblemRecord(id=pid, gold=doc["answer"], prompt=doc["problem"], missing=True))
            continue
        records.append(
            score_problem(
                pid,
                doc["answer"],
                [r["output"] for r in grouped[pid]],
                prompt=doc["problem"],
                hit_limit=[_hit_limit(r) for r in grouped[pid]],
                timeout_s=timeout_s,
                protocol=protocol,
            )
        )
    summary = {"benchmark": name, "protocol": protocol, **summarize(records), "missing_ids": missing}
    return summary, records


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _serve()
