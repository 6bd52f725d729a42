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
from crawl2score.tasks._prefect import Progress, logger, retry_unless_bad_input, table_artifact
from crawl2score.workdir import atomic_write_json


@task(name="eval-checkpoint")
def evaluate_checkpoint_task(
    cfg: EvalConfig, checkpoint: str, tokenizer: str, out_dir: str, heldout_dir: str | None = None
) -> dict[str, Any]:
    """lm-eval on one checkpoint; per-task sample files in `out_dir`; figures per task."""
    from crawl2score.eval.lineage import checkpoint_lineage
    from crawl2score.eval.runner import evaluate_checkpoint
    from crawl2score.model.checkpoint import resolve_checkpoint

    step = resolve_checkpoint(checkpoint)
    log = logger()
    log.info("evaluating %s on %s (%s protocol)", step, ", ".join(cfg.benchmarks), cfg.protocol)
    progress = Progress(f"eval {step.name}: generations", total=1.0)
    results = evaluate_checkpoint(
        cfg,
        step,
        tokenizer=tokenizer,
        out_dir=out_dir,
        heldout_dir=heldout_dir,
        on_generated=lambda done, total: progress.set(done / max(total, 1)),
    )
    progress.finish()
    for row in score_rows(step.name, results):
        log.info(
            "%s %s: %s %s (%s)", step.name, row["benchmark"], row["metric"], row["value"], row["problems or bytes"]
        )
    table_artifact(f"eval-{step.name}", score_rows(step.name, results), description=f"evaluation of {step}")
    return {"checkpoint": checkpoint_lineage(step), "results": results}


@task(name="eval-contamination", retries=1, retry_delay_seconds=5, retry_condition_fn=retry_unless_bad_input)
def contamination_task(corpus: str, benchmarks: list[str], benchmarks_dir: str | None, ngram: int) -> dict[str, Any]:
    from crawl2score.benchmarks import short_name
    from crawl2score.eval.contamination import contamination_report

    if not Path(corpus).exists():
        return {"skipped": f"no training corpus at {corpus}"}
    return contamination_report(corpus, [short_name(t) for t in benchmarks], benchmarks_dir, ngram)


@task(name="eval-write-results")
def write_results(out_dir: str, results: dict[str, Any]) -> str:
    path = Path(out_dir) / "results.json"
    atomic_write_json(path, results)
    return str(path)


def _r4(x: Any) -> Any:
    return round(x, 4) if isinstance(x, float) else x


def score_rows(step: str, results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per math benchmark and per BPB text, so bits per byte sits beside the math scores."""
    rows = []
    for name, r in results.items():
        if name.startswith("_"):
            continue
        rows.append(
            {
                "checkpoint": step,
                "benchmark": name,
                "metric": "accuracy",
                "value": _r4(r["accuracy"]),
                "ci95 / baseline": str([_r4(x) for x in r["ci95"]]),
                "problems or bytes": r["problems"],
                "no_answer_rate": _r4(r["no_answer_rate"]),
            }
        )
    for name, r in (results.get("_bpb") or {}).items():
        rows.append(
            {
                "checkpoint": step,
                "benchmark": f"bpb {name}",
                "metric": "bits_per_byte",
                "value": _r4(r.get("bits_per_byte")),
                "ci95 / baseline": (
                    f"unigram {_r4(r['unigram_bits_per_byte'])}, in-sample {_r4(r['unigram_insample_bits_per_byte'])}"
                    if "bits_per_byte" in r
                    else r["skipped"]
                ),
                "problems or bytes": r.get("bytes"),
                "no_answer_rate": None,
            }
        )
    return rows
