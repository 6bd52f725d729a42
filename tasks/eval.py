"""Prefect tasks of the eval stage: evaluate one checkpoint, the contamination report, results.json.

Each wraps a plain function of `eval/` (call `task.fn(...)` in tests). Evaluation runs in the task's
worker thread: math-verify's signal-based timeouts cannot work there, so `eval.scoring` checks answers in
a child process with a hard wall-clock limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from crawl2score.config.eval import EvalConfig
from crawl2score.tasks._prefect import logger, table_artifact
from crawl2score.workdir import atomic_write_json


@task(name="eval-checkpoint")
def evaluate_checkpoint_task(cfg: EvalConfig, checkpoint: str, tokenizer: str, out_dir: str) -> dict[str, Any]:
    """lm-eval on one checkpoint; per-task sample files in `out_dir`; figures per task."""
    from crawl2score.eval.lineage import checkpoint_lineage
    from crawl2score.eval.runner import evaluate_checkpoint
    from crawl2score.model.checkpoint import resolve_checkpoint

    step = resolve_checkpoint(checkpoint)
    logger().info("evaluating %s on %s (%s protocol)", step, ", ".join(cfg.tasks), cfg.protocol)
    results = evaluate_checkpoint(cfg, step, tokenizer=tokenizer, out_dir=out_dir)
    rows = [
        {
            "checkpoint": step.name,
            "task": name,
            "accuracy": None if r["accuracy"] is None else round(r["accuracy"], 4),
            "problems": r["problems"],
            "samples": r["samples"],
            "ci95": str([None if x is None else round(x, 4) for x in r["ci95"]]),
            "no_answer_rate": None if r["no_answer_rate"] is None else round(r["no_answer_rate"], 4),
        }
        for name, r in results.items()
        if not name.startswith("_")
    ]
    table_artifact(f"eval-{step.name}", rows, description=f"evaluation of {step}")
    return {"checkpoint": checkpoint_lineage(step), "results": results}


@task(name="eval-contamination", retries=1, retry_delay_seconds=5)
def contamination_task(corpus: str, tasks: list[str], benchmarks_dir: str | None, ngram: int) -> dict[str, Any]:
    from crawl2score.benchmarks import short_name
    from crawl2score.eval.contamination import contamination_report

    if not Path(corpus).exists():
        return {"skipped": f"no training corpus at {corpus}"}
    return contamination_report(corpus, [short_name(t) for t in tasks], benchmarks_dir, ngram)


@task(name="eval-write-results")
def write_results(out_dir: str, results: dict[str, Any]) -> str:
    path = Path(out_dir) / "results.json"
    atomic_write_json(path, results)
    return str(path)
