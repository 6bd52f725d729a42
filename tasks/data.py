"""Prefect tasks of the data stage: thin wrappers over `crawl2score.data` (call `.fn` to skip Prefect)."""

from __future__ import annotations

import os
from typing import Any

from prefect import task

from crawl2score.config.data import DataConfig
from crawl2score.tasks._prefect import Progress, logger, stage_cache_key, table_artifact


@task(name="data-sample", task_run_name="sample {pages} pages")
def write_sample_data(out_dir: str, pages: int = 2400, seed: int = 0) -> dict[str, Any]:
    """Write the embedded sample WARC + manifest; returns the manifest's counts."""
    from crawl2score.data.sample import write_sample

    manifest = write_sample(out_dir, pages=pages, seed=seed)
    return {"pages": manifest["pages"], "html_pages": manifest["html_pages"], "counts": manifest["counts"]}


def _retry_unless_input_error(task, task_run, state) -> bool:
    """Retry transient I/O failures only: a missing path stays missing."""
    from crawl2score.data.inputs import InputError

    try:
        state.result()
    except InputError:
        return False
    except Exception:
        return True
    return False


# Remote inputs (warc.paths.gz, HEAD of URLs) can fail transiently; InputError (404, missing path) cannot.
@task(name="data-inputs", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_unless_input_error)
def resolve_data_inputs(section: dict[str, Any], workdir: str) -> list[str]:
    """The input files/URLs: `data.input` resolved, or the generated sample when it is empty."""
    from crawl2score.data.inputs import ensure_input

    paths = ensure_input(DataConfig.model_validate(section), workdir)
    logger().info("data: %d input file(s): %s", len(paths), ", ".join(paths[:5]) + (" …" if len(paths) > 5 else ""))
    return paths


@task(name="data-pipeline", cache_key_fn=stage_cache_key("data"), refresh_cache=True)
def run_data_pipeline(
    section: dict[str, Any], input_keys: list[str], workdir: str, inputs: list[str], key: str
) -> dict[str, Any]:
    """Run every datatrove stage; progress artifact + terminal bar while it runs, table of figures at the end.

    `refresh_cache=True`: the flow only calls this when WORKDIR lacks the output, so a cached result
    would be a result without files; the cache key still records the stage key in Prefect.
    """
    from tqdm import tqdm

    from crawl2score.data.pipeline import run_data_stage

    cfg = DataConfig.model_validate(section)
    progress = Progress("data: WARC → deduplicated corpus", total=1.0)
    bar = tqdm(total=1000, desc="data", unit="‰", disable=os.environ.get("CRAWL2SCORE_NO_BAR") == "1")
    log = logger()
    last_message = [""]

    def on_progress(fraction: float, message: str) -> None:
        progress.set(fraction)
        bar.n = int(1000 * fraction)
        bar.set_postfix_str(message, refresh=True)
        if message != last_message[0] and not message.startswith("data: filter,"):
            log.info(message)
        last_message[0] = message

    try:
        figures = run_data_stage(cfg, workdir, inputs=inputs, on_progress=on_progress, key=key)
    finally:
        bar.close()
    progress.finish()
    table_artifact("data-steps", _step_rows(workdir), description="documents and bytes per step")
    return figures


def _step_rows(workdir: str) -> list[dict[str, Any]]:
    import json
    from pathlib import Path

    try:
        stats = json.loads((Path(workdir) / "data" / "stats.json").read_text())
    except (OSError, ValueError):
        return []
    rows = []
    for row in stats["steps"]:
        langs = ", ".join(f"{k}={v['docs']}" for k, v in row["by_language"].items())
        rows.append(
            {k: row[k] for k in ("step", "docs_in", "docs_out", "bytes_in", "bytes_out")} | {"languages": langs}
        )
    return rows
