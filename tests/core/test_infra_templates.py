"""The GPU work-pool templates in infra/pools/ render, through Prefect's own templating, into jobs that
request GPUs; the values a user passes as job variables land where the worker reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.utilities.templating import apply_values

POOLS = Path(__file__).resolve().parents[2] / "infra" / "pools"


def render(name: str, **job_variables) -> dict:
    template = json.loads((POOLS / name).read_text())
    values = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    values.update(job_variables)
    return apply_values(template["job_configuration"], values)


@pytest.mark.parametrize("gpus", [1, 8])
def test_kubernetes_job_requests_the_gpus(gpus: int) -> None:
    job = render("kubernetes-gpu.json", gpus=gpus, image="registry.example/crawl2score:1")
    (container,) = job["job_manifest"]["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert container["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert container["image"] == "registry.example/crawl2score:1"
    assert container["env"]["CRAWL2SCORE_REPO"] == "/opt/crawl2score"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"work": "/work", "shm": "/dev/shm"}


def test_docker_container_requests_the_gpus() -> None:
    job = render("docker-gpu.json", gpus=2)
    (request,) = job["container_create_kwargs"]["device_requests"]
    assert request == {"Driver": "nvidia", "Count": 2, "Capabilities": [["gpu"]]}
    assert job["container_create_kwargs"]["shm_size"] == "16g"
    assert job["volumes"] == ["/srv/crawl2score/work:/work"]


@pytest.mark.parametrize("name", ["kubernetes-gpu.json", "docker-gpu.json"])
def test_every_placeholder_has_a_variable(name: str) -> None:
    import re

    template = json.loads((POOLS / name).read_text())
    used = set(re.findall(r"\{\{ *(\w+) *\}\}", json.dumps(template["job_configuration"])))
    assert used <= set(template["variables"]["properties"]), used - set(template["variables"]["properties"])
