"""Launchers outside Prefect: `crawl2score train --prepare` writes the run config under the train stage's
key, and `infra/slurm_train.sbatch` starts the real trainer on it through torchrun's c10d rendezvous (Slurm's
own commands stand in as one-line scripts: this machine has no Slurm; the trainer and torchrun are real)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from crawl2score.cli import main
from crawl2score.config import Config
from crawl2score.workdir import stage_key
from tests.train.test_flow import _config

REPO = Path(__file__).resolve().parents[2]


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(0o755)


def test_prepare_then_sbatch_trains_and_the_stage_resumes_it(tmp_path, tokens_dir, capsys) -> None:
    cfg: Config = _config(tmp_path, tokens_dir, steps=4, checkpoint_every=2)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(cfg.model_dump(mode="json")))
    assert main(["train", "--prepare", "--config", str(config_file)]) == 0
    work = Path(cfg.workdir)
    run_config = json.loads((work / "checkpoints" / "run-config.json").read_text())
    expected = stage_key(
        "train", cfg.stage_config("train"), [json.loads((work / "tokens/.stage.json").read_text())["key"]]
    )
    assert run_config["stage_key"] == expected
    assert "-m crawl2score.model.train --config" in capsys.readouterr().out

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "scontrol", "echo 127.0.0.1")  # `scontrol show hostnames` → the head node
    _stub(bin_dir, "srun", 'exec "$@"')  # one node: srun runs its command here
    _stub(bin_dir, "torchrun", f'exec {sys.executable} -m torch.distributed.run "$@"')
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        SLURM_JOB_NODELIST="node1",
        SLURM_NNODES="1",
        SLURM_JOB_ID="4242",
        GPUS_PER_NODE="1",
    )
    out = subprocess.run(
        ["bash", str(REPO / "infra" / "slurm_train.sbatch"), str(work)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (work / "checkpoints" / "latest").read_text().strip() == "step-4"

    # The pipeline's train stage finds these checkpoints under its own key: it resumes at the last step
    # rather than moving them aside or starting over.
    from crawl2score.tasks.train import prepare_checkpoints

    assert prepare_checkpoints(str(work), expected, fresh=False) is None
    assert (work / "checkpoints" / "step-4").is_dir()


def test_sbatch_without_prepare_is_a_one_line_error(tmp_path) -> None:
    out = subprocess.run(
        ["bash", str(REPO / "infra" / "slurm_train.sbatch"), str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "crawl2score train --prepare" in out.stderr


def test_torchrun_command_lines_from_the_launch_section() -> None:
    from crawl2score.config.launch import LaunchConfig
    from crawl2score.tasks.train import trainer_command

    cfg, work = Path("/w/checkpoints/run-config.json"), "/w"
    tail = ["-m", "crawl2score.model.train", "--config", str(cfg), "--workdir", str(Path(work).resolve())]
    assert trainer_command(cfg, work, 1) == [sys.executable, *tail]
    assert trainer_command(cfg, work, 8) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=8", *tail
    ]  # fmt: skip
    multi = LaunchConfig(nnodes=4, node_rank=2, rdzv_endpoint="node0:29500", rdzv_id="job-7")
    assert trainer_command(cfg, work, 8, multi) == [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=4", "--nproc-per-node=8", "--node-rank=2",
        "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29500", "--rdzv-id=job-7", *tail,
    ]  # fmt: skip


def test_several_nodes_need_a_rendezvous(tmp_path, capsys) -> None:
    code = main(["train", "--prepare", "--workdir", str(tmp_path), "--set", "launch.nnodes=2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "launch.rdzv_endpoint" in err
