"""Work pools and deployments, kept apart from the flow code (Prefect's own advice).

The deployments are declared once, in the repository's `prefect.yaml`; this module applies that file
through Prefect's Python API, so `crawl2score deploy` and `prefect deploy --all` create the same
deployments. Two process pools: `cpu` for data, tokenizer, tokens and evaluation, `gpu` for training
(concurrency 1 per GPU worker, so two training runs never share a GPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from crawl2score.config import Config

REPO = Path(__file__).resolve().parent.parent
PREFECT_YAML = REPO / "prefect.yaml"


def declared_deployments(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The `deployments:` list of prefect.yaml, each with name, entrypoint and work_pool."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    deployments = spec.get("deployments") or []
    for d in deployments:
        if not {"name", "entrypoint", "work_pool"} <= set(d):
            raise ValueError(f"{path}: deployment {d.get('name', '?')!r} needs name, entrypoint and work_pool")
    return deployments


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


ZOMBIE_AUTOMATION = "crawl2score: crash flow runs whose heartbeats stop"


def ensure_zombie_automation(cfg: Config) -> str:
    """The automation Prefect's docs prescribe for self-hosted servers ("detect zombie flows"): a
    deployment run whose heartbeats stop (its machine or worker died) is marked Crashed after
    `prefect.zombie_after_s`, so the UI stops showing it Running and a new run can resume its checkpoints.
    Workers started by `crawl2score worker` send heartbeats every `prefect.heartbeat_s`."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        existing = Automation.read(name=ZOMBIE_AUTOMATION)
    except ValueError:  # none of that name
        existing = None
    if existing is not None:
        existing.delete()  # re-created below with this config's timing
    Automation(
        name=ZOMBIE_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=cfg.prefect.zombie_after_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {cfg.prefect.zombie_after_s} s: the worker or its machine stopped",
            )
        ],
    ).create()
    return f"automation {ZOMBIE_AUTOMATION!r} ({'updated' if existing else 'created'}; {cfg.prefect.zombie_after_s} s)"


def deploy_all(cfg: Config, source: str | None = None) -> Iterator[str]:
    """Create the pools, then every deployment of prefect.yaml with this config as its default parameter.

    prefect.yaml names the pools `cpu` and `gpu`; `prefect.cpu_pool` / `prefect.gpu_pool` rename them.
    """
    from prefect import flow

    yield from ensure_pools(cfg)
    yield ensure_zombie_automation(cfg)
    pools = {"cpu": cfg.prefect.cpu_pool, "gpu": cfg.prefect.gpu_pool}
    for spec in declared_deployments():
        pool = spec["work_pool"]
        pool_name = pools.get(pool["name"], pool["name"])
        remote = flow.from_source(source=source or str(REPO), entrypoint=spec["entrypoint"])
        deployment_id = remote.deploy(
            name=spec["name"],
            work_pool_name=pool_name,
            job_variables=pool.get("job_variables") or None,
            description=spec.get("description"),
            concurrency_limit=spec.get("concurrency_limit"),
            parameters={"config": cfg.model_dump(mode="json")},
            build=False,
            push=False,
            print_next_steps=False,
        )
        yield f"deployment {remote.name}/{spec['name']} → pool {pool_name!r} ({deployment_id})"
