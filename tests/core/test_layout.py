"""The package as a worker and an installer see it: every deployment entrypoint of prefect.yaml loads in a
fresh process both as a script (Prefect's loader, which puts the script's folder first on sys.path) and as
a module, and the built wheel holds one top-level name, `crawl2score`."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from crawl2score.infra.deploy import declared_deployments

REPO = Path(__file__).resolve().parents[2]

LOAD_BOTH_WAYS = """
import sys
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.importtools import import_object

entrypoint = sys.argv[1]
as_script = load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
path, name = entrypoint.split(":")
as_module = import_object("crawl2score." + path.removesuffix(".py").replace("/", ".") + ":" + name)
print(as_script.name, as_module.name)
"""


@pytest.mark.parametrize("spec", declared_deployments(), ids=lambda spec: spec["name"])
def test_entrypoint_loads_as_a_worker_loads_it(spec, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PREFECT_HOME"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", LOAD_BOTH_WAYS, spec["entrypoint"]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # one name per stage: the flow is named as its deployment
    assert out.stdout.split() == [spec["name"], spec["name"]]


def test_wheel_has_one_top_level_name(tmp_path) -> None:
    import shutil

    # Built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "work", ".prefect", "__pycache__")
    shutil.copytree(REPO, src, symlinks=True, ignore=skip)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = tmp_path.glob("crawl2score-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"crawl2score"}
    for module in ("flows/pipeline.py", "tasks/train.py", "model/train.py", "eval/lm.py", "infra/deploy.py"):
        assert f"crawl2score/{module}" in names, module
    assert "crawl2score/eval/yaml/_c2s_chat_template" in names
