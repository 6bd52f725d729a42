"""Work pools and deployments, kept apart from the flow code (Prefect's own advice).

Two process pools: `cpu` for data, tokenizer and evaluation, `gpu` for training (concurrency 1 per GPU
worker, so two training runs never share a GPU). Deployments are created from this checkout
(`flow.from_source`), the same ones `prefect.yaml` declares for `prefect deploy --all`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from crawl2score.config import Config

REPO = Path(__file__).resolve().parent.parent

# deployment name → (entrypoint, pool kind, description)
DEPLOYMENTS: dict[str, tuple[str, str, str]] = {
    "pipeline": ("flows/pipeline.py:pipeline", "cpu", "the whole pipeline, data to scores"),
    "data": ("flows/data.py:data_flow", "cpu", "Common Crawl WARC → deduplicated corpus"),
    "tokenizer": ("flows/tokenizer.py:tokenizer_flow", "cpu", "byte-level BPE of 102,400 entries"),
    "tokenize": ("flows/tokenizer.py:tokenize_flow", "cpu", "corpus → uint32 token shards"),
    "train": ("flows/train.py:train_flow", "gpu", "pretraining with torchrun"),
    "eval": ("flows/eval.py:eval_flow", "cpu", "lm-eval on AIME 2024, MATH-500, CNMO 2024"),
}


def ensure_pools(cfg: Config) -> list[str]:
    """Create the process work pools if missing; the GPU pool runs one flow at a time."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    made = []
    with get_client(sync_client=True) as client:
        for name, limit in ((cfg.prefect.cpu_pool, None), (cfg.prefect.gpu_pool, 1)):
            try:
                client.create_work_pool(
                    WorkPoolCreate(name=name, type="process", base_job_template=template, concurrency_limit=limit)
                )
                made.append(f"work pool {name!r} created (process, concurrency {limit or 'unlimited'})")
            except ObjectAlreadyExists:
                made.append(f"work pool {name!r} exists")
    return made


def deploy_all(cfg: Config, source: str | None = None) -> Iterator[str]:
    """Create the pools, then every deployment with this config as its default parameter."""
    from prefect import flow

    yield from ensure_pools(cfg)
    pools = {"cpu": cfg.prefect.cpu_pool, "gpu": cfg.prefect.gpu_pool}
    for name, (entrypoint, kind, description) in DEPLOYMENTS.items():
        remote = flow.from_source(source=source or str(REPO), entrypoint=entrypoint)
        deployment_id = remote.deploy(
            name=name,
            work_pool_name=pools[kind],
            description=description,
            parameters={"config": cfg.model_dump(mode="json")},
            build=False,
            push=False,
            print_next_steps=False,
        )
        yield f"deployment {remote.name}/{name} → pool {pools[kind]!r} ({deployment_id})"
