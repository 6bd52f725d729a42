"""The end-to-end flow: one subflow per stage, each skipped when its output is current.

    data → tokenizer → tokens → train → eval

Deployed as `crawl2score/pipeline` (see prefect.yaml); run locally with `crawl2score run`.
"""

from __future__ import annotations

import importlib
from typing import Any

from prefect import flow

from crawl2score.config import Config
from crawl2score.tasks._prefect import logger, table_artifact
from crawl2score.workdir import STAGES, read_marker

# stage → (module, flow function). A new stage plugs in here and in crawl2score.workdir.STAGES.
STAGE_FLOWS: dict[str, tuple[str, str]] = {
    "data": ("crawl2score.flows.data", "data_flow"),
    "tokenizer": ("crawl2score.flows.tokenizer", "tokenizer_flow"),
    "tokens": ("crawl2score.flows.tokenizer", "tokenize_flow"),
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
    run = run_deployment(
        name=name, parameters={"config": config.model_dump(mode="json"), "force": force}, as_subflow=True
    )
    if run.state is None or not run.state.is_completed():
        raise RuntimeError(f"train deployment {name!r} ended in state {run.state.name if run.state else 'unknown'}")
    marker = read_marker(config.workdir, "train") or {}
    return {"stage": "train", "key": marker.get("key", ""), "skipped": False, "figures": marker.get("figures", {})}


@flow(name="pipeline", log_prints=True)
def pipeline(
    config: Config | None = None,
    force: list[str] | None = None,
    stages: list[str] | None = None,
) -> dict[str, Any]:
    """Run the stages in order. `force` redoes the named stages; `stages` limits the run to a subset."""
    config = config or Config()
    force = force or []
    wanted = [s for s in STAGES if stages is None or s in stages]
    results: dict[str, Any] = {}
    for stage in wanted:
        if stage == "train" and config.prefect.train_deployment:
            result = _train_on_pool(config, force=stage in force)
        else:
            result = stage_flow(stage)(config=config, force=stage in force)
        results[stage] = {"key": result["key"], "skipped": result["skipped"]}
        logger().info("stage %s: %s (key %s)", stage, "skipped" if result["skipped"] else "done", result["key"])
    table_artifact(
        "pipeline-stages",
        [{"stage": s, "key": r["key"], "skipped": r["skipped"]} for s, r in results.items()],
        description="stages of this run",
    )
    return {"workdir": config.workdir, "stages": results}
