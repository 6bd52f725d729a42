"""The end-to-end flow: one subflow per stage, each skipped when its output is current.

    data → tokenizer → tokens → train → eval

Deployed as `pipeline/pipeline` (see prefect.yaml); run locally with `crawl2score run`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from prefect import flow

from crawl2score.config import Config, apply_overrides
from crawl2score.errors import FailedElsewhere
from crawl2score.flows._stage import StageInputMissing
from crawl2score.tasks._prefect import logger, markdown_artifact, table_artifact
from crawl2score.workdir import flatten_figures, format_value, missing_input, read_marker, select_stages, stage_dir

# stage → (module, flow function). A new stage plugs in here and in crawl2score.workdir.STAGES.
STAGE_FLOWS: dict[str, tuple[str, str]] = {
    "data": ("crawl2score.flows.data", "data_flow"),
    "tokenizer": ("crawl2score.flows.tokenizer", "tokenizer_flow"),
    "tokens": ("crawl2score.flows.tokens", "tokens_flow"),
    "train": ("crawl2score.flows.train", "train_flow"),
    "eval": ("crawl2score.flows.eval", "eval_flow"),
}


def stage_flow(stage: str) -> Any:
    module, name = STAGE_FLOWS[stage]
    return getattr(importlib.import_module(module), name)


def _train_on_pool(config: Config, force: bool) -> dict[str, Any]:
    """Hand the train stage to its deployment, so a GPU worker runs it; the work directory is shared."""
    from prefect.deployments import run_deployment

    name = config.prefect.train_deployment
    before = read_marker(config.workdir, "train") or {}
    run = run_deployment(
        name=name, parameters={"config": config.model_dump(mode="json"), "force": force}, as_subflow=True
    )
    if run.state is None or not run.state.is_completed():
        # Its log holds the cause (one line for bad input, else the traceback); a traceback of this flow
        # would point here and bury the line.
        state = run.state.name if run.state else "unknown"
        said = f": {run.state.message}" if run.state and run.state.message else ""
        raise FailedElsewhere(f"train deployment {name!r}: flow run {run.name!r} ({run.id}) ended {state}{said}")
    marker = read_marker(config.workdir, "train") or {}
    skipped = bool(before) and before.get("finished") == marker.get("finished")  # the marker was not rewritten
    return {"stage": "train", "key": marker.get("key", ""), "skipped": skipped, "figures": marker.get("figures", {})}


# The figures a reader looks for first, per stage (keys of the stage's figures, flattened with dots;
# a trailing "*" matches any benchmark).
HEADLINES: dict[str, tuple[str, ...]] = {
    "data": ("output_documents", "output_bytes", "docs_per_s_per_core"),
    "tokenizer": ("vocab_size", "*.bytes_per_token", "train_mb_per_s"),
    "tokens": ("num_tokens", "num_docs", "num_shards"),
    "train": ("steps", "tokens", "loss", "ce_loss", "tokens_per_s"),
    "eval": ("*.accuracy", "*.bits_per_byte", "checkpoint_step"),
}


def headline(stage: str, figures: dict[str, Any]) -> str:
    flat = flatten_figures(figures)
    picked = []
    for want in HEADLINES.get(stage, ()):
        if want.startswith("*"):
            picked += [k for k in flat if k.endswith(want[1:])]
        elif want in flat:
            picked.append(want)
    return ", ".join(f"{k} {format_value(flat[k])}" for k in picked) or "—"


def summary_markdown(config: Config, results: dict[str, Any]) -> str:
    """The run at a glance: each stage, whether it ran, where its output is, its headline figures."""
    root = Path(config.workdir).resolve()
    lines = [
        f"# crawl2score pipeline: `{config.name}`",
        "",
        f"Work directory `{root}`; full figures in `{root / 'report.md'}`.",
        "",
        "| stage | this run | output | headline figures |",
        "|---|---|---|---|",
    ]
    for stage, r in results.items():
        ran = "skipped (current)" if r["skipped"] else "ran"
        lines.append(f"| {stage} | {ran} | `{stage_dir(root, stage)}` | {headline(stage, r['figures'])} |")
    return "\n".join(lines) + "\n"


@flow(name="pipeline")
def pipeline(
    config: Config | None = None,
    force: list[str] | None = None,
    stages: list[str] | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Run the stages in order. `force` redoes the named stages; `stages` limits the run to a subset;
    `overrides` (`section.key=value`, as `--set`) changes keys of `config` without restating the rest."""
    config = apply_overrides(config or Config(), overrides)
    wanted, force = select_stages(stages, force)  # a typo fails the run in one line, not an empty run
    problem = missing_input(config, wanted[0], through=wanted[-1]) if wanted else None
    if problem:  # the same line `crawl2score run` gives before Prefect starts, naming the whole run's stages
        raise StageInputMissing(problem)
    results: dict[str, Any] = {}
    for stage in wanted:
        if stage == "train" and config.prefect.train_deployment:
            result = _train_on_pool(config, force=stage in force)
        else:
            result = stage_flow(stage)(config=config, force=stage in force)
        results[stage] = {"key": result["key"], "skipped": result["skipped"], "figures": result["figures"]}
        logger().info("stage %s: %s (key %s)", stage, "skipped" if result["skipped"] else "done", result["key"])
    table_artifact(
        "pipeline-stages",
        [{"stage": s, "key": r["key"], "skipped": r["skipped"]} for s, r in results.items()],
        description="stages of this run",
    )
    markdown_artifact("pipeline-summary", summary_markdown(config, results), description="the run at a glance")
    return {
        "workdir": config.workdir,
        "stages": {s: {"key": r["key"], "skipped": r["skipped"]} for s, r in results.items()},
    }
