"""The train stage flow: WORKDIR/tokens/ → WORKDIR/checkpoints/ (pretraining, resumable)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from crawl2score.config import Config
from crawl2score.flows._stage import run_stage
from crawl2score.tasks.train import prepare_checkpoints, resume_key, train_model
from crawl2score.workdir import read_marker, stable_hash


def default_nproc() -> int:
    """All local GPUs, one process each; one process on a CPU-only machine."""
    import torch

    return max(torch.cuda.device_count(), 1)


@flow(name="train")
def train_flow(config: Config, force: bool = False, nproc: int | None = None) -> dict[str, Any]:
    """Pretrain unless WORKDIR/checkpoints already holds the result for the same key.

    The key covers the `train` section, the tokens' stage key and the `model` section (a new tokenization
    or architecture is a new run). An interrupted run resumes from its newest checkpoint; `force` starts
    over (and is needed when the checkpoints on disk belong to another config).
    """
    tokens = read_marker(config.workdir, "tokens")
    if not tokens:
        raise RuntimeError(f"{config.workdir}/tokens has no completed tokenization; run `crawl2score tokenize` first")
    input_keys = [tokens["key"], stable_hash(config.section_dict("model"))]
    model, train = config.section_dict("model"), config.section_dict("train")

    def body(_key: str) -> dict[str, Any]:
        prepare_checkpoints(config.workdir, resume_key(model, train, input_keys), fresh=force)
        return train_model(model, train, input_keys, config.workdir, nproc or default_nproc())

    return run_stage("train", config, "train", input_keys, body, force=force)


if __name__ == "__main__":
    train_flow(Config())
