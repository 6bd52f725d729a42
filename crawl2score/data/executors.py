"""Running the recipe's stages on datatrove's executors (local, Slurm, Ray), with progress and checks.

Each stage needs the previous one's files on disk, so stages run one after the other; on Slurm they are
chained job arrays (`depends`, afterok) submitted at once, then polled through completion markers.
Progress of the filter stage (where extraction makes most of the time) comes from the reader's per-rank
progress files, read here once a second.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path

from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.logging import logger
from datatrove.utils.stats import PipelineStats

from crawl2score.config.data import DataConfig, ExecutorConfig
from crawl2score.data.recipe import StagePaths

ProgressFn = Callable[[float, str], None]
FILTER_STAGE_SHARE = 0.75  # share of the progress bar given to stage 1 (extraction dominates the time)


def make_executor(
    ex: ExecutorConfig, name: str, pipeline: list[PipelineStep], tasks: int, logging_dir: Path, depends=None
):
    """The datatrove executor the config names, for one stage."""
    if ex.kind == "local":
        workers = min(ex.workers, tasks)
        return (SequentialLocalExecutor if workers == 1 else LocalPipelineExecutor)(
            pipeline,
            tasks=tasks,
            workers=workers,
            logging_dir=str(logging_dir),
            start_method=ex.start_method,
        )
    if ex.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(
            pipeline,
            tasks=tasks,
            time=ex.time,
            partition=ex.partition,
            cpus_per_task=ex.cpus_per_task,
            mem_per_cpu_gb=ex.mem_per_cpu_gb,
            qos=ex.qos,
            job_name=f"crawl2score-{name}",
            venv_path=_activate_script(ex.venv_path),
            sbatch_args=ex.sbatch_args or None,
            logging_dir=str(logging_dir),
            depends=depends,
        )
    from datatrove.executor.ray import RayPipelineExecutor

    return RayPipelineExecutor(
        pipeline,
        tasks=tasks,
        workers=ex.workers,
        logging_dir=str(logging_dir),
        cpus_per_task=ex.cpus_per_task,
        mem_per_cpu_gb=ex.mem_per_cpu_gb,
        depends=depends,
    )


class SequentialLocalExecutor(LocalPipelineExecutor):
    """datatrove's local executor for one worker, without its Manager process.

    With `workers=1` datatrove runs the tasks in this process, one after the other, but still starts a
    `multiprocess.Manager` (a forked server process) only to hand out local rank 0: ~25 ms of CPU per stage,
    eight stages per data run, about a tenth of a run on a few hundred pages (BENCHMARKS.md). This runs the
    same tasks in the same order with the same logs, stats and completion markers; more workers, or a
    `depends` chain, go to datatrove's own `run`.
    """

    def run(self) -> PipelineStats | None:
        if self.workers != 1 or self.depends:
            return super().run()
        self._launched = True
        ranks = range(self.local_rank_offset, self.local_rank_offset + self.local_tasks)
        if all(map(self.is_rank_completed, ranks)):
            logger.info(f"Not doing anything as all {self.local_tasks} tasks have already been completed.")
            return None
        self.save_executor_as_json()
        todo = self.get_incomplete_ranks(ranks)
        if len(todo) < self.local_tasks:
            logger.info(f"Skipping {self.local_tasks - len(todo)} already completed tasks")
        pipeline, stats = self.pipeline, PipelineStats()
        try:
            for rank in todo:
                self.pipeline = deepcopy(pipeline)  # every task starts from unused steps, as in datatrove
                stats += self._run_for_rank(rank, 0)
        finally:
            self.pipeline = pipeline
        with self.logging_dir.open("stats.json", "wt") as f:
            stats.save_to_disk(f)
        logger.success(stats.get_repr(f"All {self.local_tasks} tasks"))
        return stats


def _activate_script(venv_path: str | None) -> str | None:
    """datatrove writes `source <venv_path>` into the job: accept the venv folder or its activate script."""
    if venv_path is None or venv_path.rstrip("/").endswith("activate"):
        return venv_path
    return f"{venv_path.rstrip('/')}/bin/activate"


def run_stages(cfg: DataConfig, stages, paths: StagePaths, report: ProgressFn) -> None:
    if cfg.executor.kind != "ray":
        _run_stages(cfg, stages, paths, report)
        return
    with _ray_session(cfg.executor):
        _run_stages(cfg, stages, paths, report)


@contextlib.contextmanager
def _ray_session(ex: ExecutorConfig):
    """Connect to `ray_address`, or start a local Ray (no dashboard) and shut it down afterwards.

    An already initialized Ray (a notebook, a test, a Ray job) is used as it is. A local Ray too small for
    one task's `cpus_per_task` / `mem_per_cpu_gb` would leave datatrove waiting for a placement group
    forever, so that fails here with one line; on a cluster the autoscaler may still add nodes.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    if ex.ray_address is not None:
        ray.init(address=ex.ray_address)
    else:
        ray.init(include_dashboard=False)
    try:
        if ex.ray_address is None:
            _check_ray_fits(ex, ray.cluster_resources())
        yield
    finally:
        ray.shutdown()


def _check_ray_fits(ex: ExecutorConfig, resources: dict[str, float]) -> None:
    cpus, mem_gb = resources.get("CPU", 0), resources.get("memory", 0) / 2**30
    if cpus < ex.cpus_per_task or mem_gb < ex.mem_per_cpu_gb * ex.cpus_per_task:
        raise RuntimeError(
            f"local Ray has {cpus:g} CPUs and {mem_gb:.1f} GB for tasks; one task asks for "
            f"executor.cpus_per_task={ex.cpus_per_task} and {ex.mem_per_cpu_gb * ex.cpus_per_task} GB "
            "(executor.mem_per_cpu_gb x cpus_per_task)"
        )


def _check_complete(executor, name: str) -> None:
    """Ray's executor logs a warning and returns when a task fails; later stages must not run on a part."""
    missing = executor.get_incomplete_ranks(skip_completed=True)
    if missing:
        raise RuntimeError(
            f"data: stage {name!r}: {len(missing)} of {executor.world_size} tasks did not complete "
            f"(ranks {missing[:8]}); see {executor.logging_dir.path}/logs"
        )


def _run_stages(cfg: DataConfig, stages, paths: StagePaths, report: ProgressFn) -> None:
    ex = cfg.executor
    n = len(stages)
    executors = []
    previous = None
    for i, (name, pipeline, tasks) in enumerate(stages):
        executor = make_executor(ex, name, pipeline, tasks, paths.logs / name, depends=previous)
        executors.append(executor)
        if ex.kind == "slurm":
            previous = executor  # slurm chains jobs with afterok; the last one's run() submits them all
            continue
        base = 0.0 if i == 0 else FILTER_STAGE_SHARE + (1 - FILTER_STAGE_SHARE) * (i - 1) / (n - 1)
        report(base, f"data: {name}")
        if i == 0:
            with _ProgressPoller(paths.progress, report, FILTER_STAGE_SHARE):
                executor.run()
        else:
            executor.run()
        _check_complete(executor, name)
        for folder in (paths.filtered, paths.exact_out):
            _ensure_readable(folder)
    if ex.kind == "slurm":
        executors[-1].run()
        while any(e.get_incomplete_ranks(skip_completed=True) for e in executors):
            done = sum(not e.get_incomplete_ranks(skip_completed=True) for e in executors)
            report(done / n, f"data: slurm {done}/{n} stages done")
            time.sleep(ex.poll_s)
    report(1.0, "data: done")


def _ensure_readable(folder: Path) -> None:
    """datatrove's JsonlReader raises on an empty folder; when every page was filtered out, the next
    stages should simply see no documents."""
    import gzip

    if folder.parent.exists() and not any(folder.glob("*.jsonl*")):
        folder.mkdir(parents=True, exist_ok=True)
        with gzip.open(folder / "empty.jsonl.gz", "wb"):
            pass


class _ProgressPoller:
    """Reads the reader's per-rank progress files (written from worker processes) once a second."""

    def __init__(self, folder: Path, report: ProgressFn, share: float) -> None:
        self.folder, self.report, self.share = folder, report, share
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _ProgressPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            files = done = docs = 0
            for p in self.folder.glob("*.json"):
                try:
                    state = json.loads(p.read_text())
                except (OSError, ValueError):
                    continue
                files += state["files"]
                done += state["files_done"]
                docs += state["docs"]
            if files:
                self.report(self.share * done / files, f"data: filter, {docs} pages read")
