"""Prefect tasks of the data stage: thin wrappers over `crawl2score.data` (call `.fn` to skip Prefect)."""

from __future__ import annotations

import os
from typing import Any

from prefect import task

from crawl2score.config.data import DataConfig
from crawl2score.tasks._prefect import Progress, logger, retry_unless_bad_input, table_artifact


@task(name="data-sample", task_run_name="sample {pages} pages")
def write_sample_data(out_dir: str, pages: int = 2400, seed: int = 0) -> dict[str, Any]:
    """Write the embedded sample WARC + manifest; returns the manifest's counts."""
    from crawl2score.data.sample import write_sample

    manifest = write_sample(out_dir, pages=pages, seed=seed)
    return {"pages": manifest["pages"], "html_pages": manifest["html_pages"], "counts": manifest["counts"]}


@task(name="data-inputs", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_bad_input)
def data_inputs_task(cfg: DataConfig, workdir: str) -> list[str]:
    """The input files/URLs: `data.input` resolved, or the generated sample when it is empty."""
    from crawl2score.data.inputs import ensure_input

    paths = ensure_input(cfg, workdir)
    logger().info("data: %d input file(s): %s", len(paths), ", ".join(paths[:5]) + (" …" if len(paths) > 5 else ""))
    return paths


@task(name="data")
def data_task(cfg: DataConfig, workdir: str, inputs: list[str], key: str) -> dict[str, Any]:
    """Run every datatrove step; progress artifact + terminal bar while it runs, table of figures at the end.

    `key` is the stage key: a killed run resumes datatrove's finished tasks only under the same key.
    """
    from tqdm import tqdm

    from crawl2score.data.pipeline import run_data_stage

    progress = Progress("data: WARC → deduplicated corpus", total=1.0)
    bar = tqdm(  # a share of the stage, not a count: percent and times, no "it/s"
        total=1000,
        desc="data",
        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]",
        disable=os.environ.get("CRAWL2SCORE_NO_BAR") == "1",
    )
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
