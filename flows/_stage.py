"""The shape every stage flow shares: key the stage, skip it when its output is current, else run it,
then record the key, the report and a table artifact of its figures.

"Current" has one definition, `crawl2score.workdir.stage_key`: the stage's config, its inputs' keys and
its code. Prefect's own task cache is not used for this on purpose: a stage's result is files in WORKDIR,
and only the marker written after them can say whether they are there and complete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crawl2score.config import Config
from crawl2score.errors import BadInput
from crawl2score.tasks._prefect import logger, table_artifact
from crawl2score.workdir import (
    clear_marker,
    is_done,
    missing_input,
    read_marker,
    stage_key,
    update_report,
    write_marker,
)


class StageInputMissing(BadInput):
    """A stage this one reads has not completed in WORKDIR."""


def upstream_key(config: Config, stage: str, upstream: str) -> str:
    """The key of `upstream`, a completed stage `stage` reads; else a one-line error saying what to run."""
    problem = missing_input(config, stage)
    if problem:
        raise StageInputMissing(problem)
    # missing_input checked the key (callers pass an upstream that has no alternative input setting)
    return str((read_marker(config.workdir, upstream) or {})["key"])


def current_key(stage: str, config: Config, input_keys: list[str]) -> str:
    """The key this stage's output must carry to be current (the one definition, for every caller)."""
    return stage_key(stage, config.stage_config(stage), input_keys)


def run_stage(
    stage: str,
    config: Config,
    input_keys: list[str],
    body: Callable[[str], dict[str, Any]],
    force: bool = False,
) -> dict[str, Any]:
    """Run `body(key)` unless WORKDIR already holds this stage's output for the same key.

    `body` does the work (usually by calling the stage's tasks) and returns the stage's figures.
    Returns {"stage", "key", "skipped", "figures"}.
    """
    workdir = config.workdir
    key = current_key(stage, config, input_keys)
    if not force and is_done(workdir, stage, key):
        marker = read_marker(workdir, stage) or {}
        logger().info(
            "%s: output for key %s is current; skipped (to redo: --force %s, or a deployment run's force)",
            stage,
            key,
            stage,
        )
        return {"stage": stage, "key": key, "skipped": True, "figures": marker.get("figures", {})}
    previous = read_marker(workdir, stage)
    if previous and not force:
        logger().info(
            "%s: output on disk has key %s, this run needs %s; redoing the stage", stage, previous.get("key"), key
        )
    clear_marker(workdir, stage)
    figures = body(key)
    write_marker(workdir, stage, key, figures, config.stage_config(stage), input_keys)
    update_report(workdir, stage, figures)
    table_artifact(f"{stage}-figures", figures, description=f"{stage} stage figures")
    return {"stage": stage, "key": key, "skipped": False, "figures": figures}
