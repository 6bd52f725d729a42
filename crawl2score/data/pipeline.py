"""The data stage: WARC → text → en/zh → quality filters → [decontamination] → exact → MinHash dedup.

`run_data_stage` is what the Prefect task calls. The parts:

* `recipe`: the datatrove steps and stages, and the settings of each filter (module doc there);
* `executors`: runs the stages on the configured executor (local, Slurm, Ray) and reports progress;
* `publish`: sums datatrove's per-task stats into stats.json and moves the output into place.

Everything is written under `WORKDIR/data/.work-<key>/` (key = config + inputs), so a crashed run resumes
from datatrove's completion markers.
"""

from __future__ import annotations

import os
import time
from typing import Any

from crawl2score.config.data import DataConfig
from crawl2score.data.executors import ProgressFn, _check_complete, _check_ray_fits, make_executor, run_stages
from crawl2score.data.inputs import InputError, ensure_input, input_fingerprint
from crawl2score.data.publish import collect_stats, publish, read_step_stats, summary_figures
from crawl2score.data.recipe import (
    DECONTAMINATE,
    REMOVED_STEPS,
    STEPS,
    StagePaths,
    active_steps,
    build_stages,
    quality_filters,
)
from crawl2score.workdir import stable_hash

__all__ = [
    "DECONTAMINATE",
    "REMOVED_STEPS",
    "STEPS",
    "ProgressFn",
    "StagePaths",
    "_check_complete",
    "_check_ray_fits",
    "active_steps",
    "build_stages",
    "collect_stats",
    "make_executor",
    "publish",
    "quality_filters",
    "read_step_stats",
    "run_data_stage",
    "summary_figures",
]


def run_data_stage(
    cfg: DataConfig,
    workdir: str | os.PathLike[str],
    inputs: list[str] | None = None,
    on_progress: ProgressFn | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """Run the whole data stage; returns `summary_figures` (the full stats are in WORKDIR/data/stats.json).

    `inputs` defaults to `ensure_input(cfg, workdir)`; `key` (the stage key) names the resumable work dir.
    """
    report = on_progress or (lambda fraction, message: None)
    inputs = list(inputs) if inputs is not None else ensure_input(cfg, workdir)
    key = key or stable_hash({"cfg": cfg.model_dump(mode="json"), "inputs": input_fingerprint(cfg, inputs)})
    paths = StagePaths(workdir, key)
    start = time.perf_counter()
    stages = build_stages(cfg, inputs, paths)
    run_stages(cfg, stages, paths, report)
    stats = collect_stats(paths, cfg, inputs, time.perf_counter() - start)
    publish(paths, stats)
    if not stats["input"]["records"]:
        raise NoRecordsError(_nothing_read(stats, paths))
    return summary_figures(stats)


class NoRecordsError(InputError):
    """Not one response record in any input: the input is wrong (not WARC, empty, cut), not the filters.
    stats.json is written, the stage's marker is not: the next stage does not start on an empty corpus.
    (Records read and all filtered out is a result, reported as such; the tokenizer then says so.)"""


def _nothing_read(stats: dict[str, Any], paths: StagePaths) -> str:
    corrupt = stats["input"]["corrupt_files"]
    files = stats["inputs"]["files"]
    why = f"{corrupt} of them corrupt, empty or cut short" if corrupt else "they hold no response record"
    return f"data: no page read from {files} input file(s): {why} (see {paths.root / 'stats.json'})"
