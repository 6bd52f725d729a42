"""The train stage flow: WORKDIR/tokens/ → WORKDIR/checkpoints/ (pretraining, resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from crawl2score.config import Config, apply_overrides
from crawl2score.flows._stage import current_key, run_stage, upstream_key
from crawl2score.tasks.train import prepare_checkpoints, train_task, trainer_command, write_run_config


def default_nproc() -> int:
    """All local GPUs, one process each; one process on a CPU-only machine."""
    import torch

    return max(torch.cuda.device_count(), 1)


def train_inputs(config: Config) -> list[str]:
    return [upstream_key(config, "train", "tokens")]


def prepare_run(config: Config, nproc: int) -> tuple[Path, list[str]]:
    """For launchers outside Prefect (`crawl2score train --prepare`, then Slurm or a shell): write the run
    config under this stage's key and return it with the trainer command for one node. A later
    `crawl2score train` or pipeline run resumes those checkpoints, since they carry the same key."""
    key = current_key("train", config, train_inputs(config))
    prepare_checkpoints(config.workdir, key, fresh=False)
    path = write_run_config(config.model, config.train, config.workdir, key)
    return path, trainer_command(path, config.workdir, nproc, config.launch)


@flow(name="train")
def train_flow(
    config: Config, force: bool = False, nproc: int | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Pretrain unless WORKDIR/checkpoints already holds the result for the same key.

    The key covers the model and train sections and the tokens' key (a new tokenization or architecture is
    a new run). An interrupted run resumes from its newest checkpoint when that checkpoint was written under
    the same key; `force` starts over.
    """
    config = apply_overrides(config, overrides)  # `--set`-style keys over the deployed config
    input_keys = train_inputs(config)

    def body(key: str) -> dict[str, Any]:
        prepare_checkpoints(config.workdir, key, fresh=force)
        procs = nproc or config.launch.nproc or default_nproc()
        return train_task(config.model, config.train, config.workdir, key, procs, config.launch)

    return run_stage("train", config, input_keys, body, force=force)


if __name__ == "__main__":
    train_flow(Config())
