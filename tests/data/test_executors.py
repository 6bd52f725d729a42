"""Executors of the data stage: Slurm arguments and validation (no sbatch here), Ray on a local Ray.

The Ray test needs the optional extra (`pip install 'crawl2score[ray]'`) and is skipped without it. It starts
a local Ray bound to 127.0.0.1 (2 CPUs, no dashboard; ~10 s), runs the whole stage on 40 documents and
compares the figures with the local executor on the same input (slow: ~75 s on 2 loaded cores), and checks
that a failed Ray task stops the stage (datatrove's Ray executor itself only logs a warning).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from crawl2score.config.data import DataConfig, ExecutorConfig
from crawl2score.data.pipeline import StagePaths, build_stages, make_executor, run_data_stage

from .conftest import small_config

SLURM = {"kind": "slurm", "partition": "cpu", "tasks": 4}


def _slurm_executors(tmp_path: Path, **executor):
    cfg = DataConfig.model_validate({"executor": {**SLURM, **executor}})
    paths = StagePaths(tmp_path, "k")
    stages = build_stages(cfg, [str(tmp_path / "x.warc.gz")], paths)
    executors, previous = [], None
    for name, pipeline, tasks in stages:
        previous = make_executor(cfg.executor, name, pipeline, tasks, paths.logs / name, depends=previous)
        executors.append(previous)
    return cfg, stages, executors


def test_slurm_executor_arguments_come_from_config(tmp_path: Path) -> None:
    from datatrove.executor import SlurmPipelineExecutor

    cfg, stages, executors = _slurm_executors(
        tmp_path,
        time="2-12:00:00",
        qos="high",
        cpus_per_task=3,
        mem_per_cpu_gb=4,
        sbatch_args={"account": "proj42", "exclusive": ""},
        venv_path="/shared/venv",
    )
    assert [type(e) for e in executors] == [SlurmPipelineExecutor] * len(stages)
    for i, (executor, (name, _, tasks)) in enumerate(zip(executors, stages, strict=True)):
        assert executor.tasks == tasks
        assert executor.job_name == f"crawl2score-{name}"
        assert (executor.partition, executor.time, executor.qos) == ("cpu", "2-12:00:00", "high")
        assert (executor.cpus_per_task, executor.mem_per_cpu_gb) == (3, 4)
        assert executor.venv_path == "/shared/venv/bin/activate"
        assert executor.depends is (executors[i - 1] if i else None)  # afterok chain, in stage order
        assert Path(executor.logging_dir.path) == tmp_path / "data" / ".work-k" / "logs" / name
        args = executor.get_sbatch_args(max_array=tasks)
        assert args["partition"] == "cpu" and args["mem-per-cpu"] == "4G" and args["cpus-per-task"] == 3
        assert args["account"] == "proj42" and args["exclusive"] == ""
        assert args["array"] == f"0-{tasks - 1}"
    # datatrove tasks per stage: shards for per-document stages, buckets for MinHash buckets, 1 for the finds
    assert [t for _, _, t in stages] == [4, 4, 1, 4, 4, cfg.minhash_buckets, 1, 4]
    script = executors[0].get_launch_file_contents(executors[0].get_sbatch_args(4), "launch_pickled_pipeline x")
    assert "#SBATCH --partition=cpu" in script and "#SBATCH --exclusive\n" in script
    assert "source /shared/venv/bin/activate" in script


def test_slurm_venv_activate_script_is_kept(tmp_path: Path) -> None:
    _, _, executors = _slurm_executors(tmp_path, venv_path="/shared/venv/bin/activate")
    assert executors[0].venv_path == "/shared/venv/bin/activate"
    _, _, executors = _slurm_executors(tmp_path)
    assert executors[0].venv_path is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"partition": None}, "executor.partition is required when executor.kind is 'slurm'"),
        ({"time": "24h"}, "executor.time '24h' is not [D-]HH:MM:SS"),
        ({"time": "1:75:00"}, "executor.time '1:75:00' is not [D-]HH:MM:SS"),
        ({"partition": "cpu gpu"}, "executor.partition 'cpu gpu' is not a Slurm partition name"),
        ({"sbatch_args": {"--account": "x"}}, "executor.sbatch_args key '--account': give the option name"),
        ({"sbatch_args": {"partition": "gpu"}}, "executor.sbatch_args['partition'] is set by executor.partition"),
        ({"sbatch_args": {"array": "0-9"}}, "executor.sbatch_args['array'] is set by datatrove"),
        ({"cpus_per_task": 0}, "Input should be greater than or equal to 1"),
        ({"venv_path": " "}, "executor.venv_path must be a path or null"),
        ({"queue": "cpu"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_slurm_settings_fail_with_one_line(settings: dict, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        ExecutorConfig.model_validate({**SLURM, **settings})
    errors = info.value.errors()
    assert len(errors) == 1
    assert message in errors[0]["msg"] and "\n" not in errors[0]["msg"]


def test_invalid_slurm_settings_from_the_cli_are_one_line(tmp_path: Path) -> None:
    from crawl2score.config import ConfigError, load_config

    with pytest.raises(ConfigError) as info:
        load_config(overrides=["data.executor.kind=slurm", "data.executor.time=3 days"], workdir=tmp_path)
    text = str(info.value)
    assert "\n" not in text
    assert ": data.executor: " in text and "executor.partition is required when executor.kind is 'slurm'" in text


def test_local_ray_too_small_fails_with_one_line() -> None:
    from crawl2score.data.executors import _check_ray_fits

    ex = ExecutorConfig(kind="ray", cpus_per_task=4, mem_per_cpu_gb=2)
    with pytest.raises(
        RuntimeError, match=r"^local Ray has 2 CPUs and 16\.0 GB for tasks; .*executor\.cpus_per_task=4 and 8 GB"
    ):
        _check_ray_fits(ex, {"CPU": 2.0, "memory": 16 * 2**30})
    _check_ray_fits(ex, {"CPU": 8.0, "memory": 16 * 2**30})


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="ray is an optional extra: pip install 'crawl2score[ray]'")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def _figures(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("seconds", "docs_per_s_per_core")}


@pytest.mark.slow  # ~75 s on 2 loaded cores: Ray start, 8 stages of actors
def test_ray_executor_runs_the_stage_like_local(local_ray, small_sample: Path, tmp_path: Path) -> None:
    data = {"input": [str(small_sample / "sample.warc.gz")], "max_documents": 40}
    local = run_data_stage(small_config(**data, executor={"tasks": 2, "workers": 1}), tmp_path / "local")
    ray_cfg = small_config(**data, executor={"kind": "ray", "tasks": 2, "workers": 2, "mem_per_cpu_gb": 1})
    on_ray = run_data_stage(ray_cfg, tmp_path / "ray")
    assert on_ray["pages_read"] == 40
    assert _figures(on_ray) == _figures(local)
    assert local_ray.is_initialized()  # a Ray the caller started is left running
    assert sorted(p.name for p in (tmp_path / "ray" / "data" / "logs").iterdir()) == sorted(
        name for name, _, _ in build_stages(ray_cfg, [], StagePaths(tmp_path, "x"))
    )


def _fail(data, rank: int = 0, world_size: int = 1):
    raise RuntimeError("boom")


def test_ray_failed_task_stops_the_stage(local_ray, tmp_path: Path) -> None:
    from crawl2score.data.executors import _check_complete

    ex = ExecutorConfig(kind="ray", tasks=1, workers=1, mem_per_cpu_gb=1)
    executor = make_executor(ex, "boom", [_fail], 1, tmp_path / "logs")
    executor.run()  # datatrove's Ray executor only logs a warning when a task fails
    with pytest.raises(RuntimeError, match=r"stage 'boom': 1 of 1 tasks did not complete \(ranks \[0\]\)"):
        _check_complete(executor, "boom")


def _record_rank(data, rank: int = 0, world_size: int = 1):
    """A pipeline step that notes which process ran which rank, and how often."""
    import os

    log = Path(os.environ["CRAWL2SCORE_TEST_RANKS"])
    with log.open("a") as f:
        f.write(f"{rank} {os.getpid()}\n")
    if rank == int(os.environ.get("CRAWL2SCORE_TEST_FAIL_RANK", "-1")):
        raise RuntimeError(f"rank {rank} fails")
    return data


def test_one_local_worker_runs_tasks_here_without_a_manager(tmp_path: Path, monkeypatch) -> None:
    """workers=1: all tasks in this process, in order, no Manager process; completion markers make a
    rerun do only what is missing, and a failing task stops the run with its error."""
    import os

    import multiprocess

    from crawl2score.data.executors import SequentialLocalExecutor

    managers: list[int] = []
    real_manager = multiprocess.Manager
    monkeypatch.setattr(multiprocess, "Manager", lambda *a, **k: managers.append(1) or real_manager(*a, **k))
    ranks = tmp_path / "ranks.txt"
    monkeypatch.setenv("CRAWL2SCORE_TEST_RANKS", str(ranks))
    ex = ExecutorConfig(kind="local", tasks=3, workers=1)

    def run() -> list[tuple[int, int]]:
        ranks.unlink(missing_ok=True)
        executor = make_executor(ex, "record", [_record_rank], 3, tmp_path / "logs")
        assert isinstance(executor, SequentialLocalExecutor)
        executor.run()
        return [tuple(map(int, line.split())) for line in ranks.read_text().splitlines()] if ranks.exists() else []

    assert run() == [(0, os.getpid()), (1, os.getpid()), (2, os.getpid())]
    assert managers == []
    assert (tmp_path / "logs" / "stats.json").exists()
    assert run() == []  # all complete: nothing runs
    (tmp_path / "logs" / "completions" / "00001").unlink()
    assert run() == [(1, os.getpid())]

    (tmp_path / "logs" / "completions" / "00002").unlink()
    monkeypatch.setenv("CRAWL2SCORE_TEST_FAIL_RANK", "2")
    with pytest.raises(RuntimeError, match="rank 2 fails"):
        run()
    assert not (tmp_path / "logs" / "completions" / "00002").exists()


def test_several_local_workers_keep_datatrove_pool() -> None:
    from datatrove.executor import LocalPipelineExecutor

    from crawl2score.data.executors import SequentialLocalExecutor

    executor = make_executor(ExecutorConfig(kind="local", tasks=2, workers=2), "x", [_record_rank], 2, Path("logs"))
    assert isinstance(executor, LocalPipelineExecutor) and not isinstance(executor, SequentialLocalExecutor)
    assert executor.workers == 2


def test_loguru_library_folders_are_worked_out_once_with_the_same_answer(monkeypatch) -> None:
    from loguru._better_exceptions import ExceptionFormatter

    from crawl2score.data.steps import cache_loguru_lib_dirs

    original = ExceptionFormatter.__dict__["_get_lib_dirs"]
    uncached = getattr(original.__func__, "__wrapped__", original.__func__)
    monkeypatch.setattr(ExceptionFormatter, "_get_lib_dirs", staticmethod(uncached))  # restored after
    before = ExceptionFormatter._get_lib_dirs()
    cache_loguru_lib_dirs()
    cache_loguru_lib_dirs()  # a second call keeps the first cache
    assert ExceptionFormatter._get_lib_dirs() == before
    assert ExceptionFormatter.__dict__["_get_lib_dirs"].__func__.cache_info().currsize == 1
