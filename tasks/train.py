"""Prefect task of the train stage: run `model.train` as a subprocess and turn its JSON lines into a view.

The trainer is a separate process group (`python -m crawl2score.model.train` for one process, torchrun for more) so
it runs the same on a laptop, a GPU worker or a cluster node, and so cancelling, a timeout or a hang can
kill all of it (`run_streaming`). A retry simply starts it again: the trainer resumes from the newest
checkpoint by itself. Call `train_model.fn(...)` to run it without Prefect.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from prefect import task

from crawl2score.config.launch import LaunchConfig
from crawl2score.errors import BadInput
from crawl2score.model.config import ModelArgs
from crawl2score.model.train_config import TrainArgs
from crawl2score.tasks._prefect import (
    HangError,
    Progress,
    logger,
    markdown_artifact,
    retry_unless_bad_input,
    run_streaming,
    table_artifact,
)
from crawl2score.workdir import atomic_write_json

REPO = Path(__file__).resolve().parent.parent
RUN_CONFIG = "run-config.json"  # the resolved config the trainer reads, in WORKDIR/checkpoints/
WATCH_PID_ENV = "CRAWL2SCORE_TRAIN_WATCH_PID"  # the trainer exits if this process disappears


TRAINER_ERROR_PREFIX = "crawl2score.model.train: error: "  # model/train.py's one-line errors


class TrainerError(BadInput):
    """The trainer exited with an error that a retry would repeat (bad config, non-finite loss): its own
    one line says what, so it is reported as bad input is (one line, no traceback through this task)."""


def trainer_command(config_path: Path, workdir: str, nproc: int, launch: LaunchConfig | None = None) -> list[str]:
    """One process on one node: plain Python. Several on one node: torchrun with a standalone rendezvous.
    Several nodes: torchrun with the `launch` section's rendezvous, the same command on every node."""
    launch = launch or LaunchConfig()
    cmd = [sys.executable]
    if launch.nnodes > 1:
        cmd += ["-m", "torch.distributed.run", f"--nnodes={launch.nnodes}", f"--nproc-per-node={nproc}"]
        if launch.node_rank is not None:
            cmd.append(f"--node-rank={launch.node_rank}")
        cmd += [
            f"--rdzv-backend={launch.rdzv_backend}",
            f"--rdzv-endpoint={launch.rdzv_endpoint}",
            f"--rdzv-id={launch.rdzv_id}",
        ]
    elif nproc > 1:
        cmd += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return cmd + [
        "-m",
        "crawl2score.model.train",
        "--config",
        str(config_path),
        "--workdir",
        str(Path(workdir).resolve()),
    ]


def write_run_config(model: ModelArgs, train: TrainArgs, workdir: str, key: str) -> Path:
    """WORKDIR/checkpoints/run-config.json: the resolved config the trainer reads, and the stage key its
    checkpoints belong to. Launchers outside Prefect (Slurm, a shell) start the trainer on this file."""
    ckpt = Path(workdir) / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    path = ckpt / RUN_CONFIG
    atomic_write_json(
        path, {"model": model.to_dict(), "train": train.to_dict(), "workdir": str(workdir), "stage_key": key}
    )
    return path


RUN_FILES = ("step-", ".step-", "latest", "metrics.jsonl", "loss_curve", RUN_CONFIG)


def prepare_checkpoints(workdir: str, key: str, fresh: bool) -> Path | None:
    """Make WORKDIR/checkpoints hold only this run's checkpoints (stage key `key`), so the trainer resumes
    its own run and nothing else.

    Checkpoints written under another key (another config, token set or trainer code) are a finished or
    abandoned other run: they are moved, not deleted, to `checkpoints/superseded-<key>/` (returned, and
    logged with its size, so a user can keep or delete them). Going back to a key set aside earlier moves
    its checkpoints back, so the trainer resumes (or finds finished) that run instead of redoing it.
    `fresh` (`--force train`) deletes this run's, including a copy set aside; another run's are set
    aside all the same (a forced run whose config then fails must not have cost a finished run).
    """
    ckpt = Path(workdir) / "checkpoints"
    if not ckpt.is_dir():
        return None
    try:
        previous = json.loads((ckpt / RUN_CONFIG).read_text()).get("stage_key")
    except (OSError, ValueError):
        previous = None
    run_files = [p for p in ckpt.iterdir() if p.name.startswith(RUN_FILES)]
    copies = _set_aside(ckpt, key)  # oldest first
    if fresh:
        doomed = [*copies, *(run_files if previous in (key, None) else [])]
        for p in doomed:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        copies = []
        if previous in (key, None):
            return None
    if previous == key and run_files:
        return None
    aside = None
    if run_files and previous is not None:
        aside = ckpt / f"superseded-{previous}"
        n = 2
        while aside.exists():  # an older copy of that run stays whole; moving onto it could fail halfway
            aside, n = ckpt / f"superseded-{previous}-{n}", n + 1
        aside.mkdir()
        for p in run_files:
            os.replace(p, aside / p.name)
        size = sum(f.stat().st_size for f in aside.rglob("*") if f.is_file())
        logger().warning(
            "train: checkpoints of another run (key %s) moved to %s (%.1f MB; delete it to free the space)",
            previous,
            aside,
            size / 1e6,
        )
    ours = copies[-1] if copies else None  # the copy set aside last went furthest
    if ours is not None and not any(p.name.startswith(RUN_FILES) for p in ckpt.iterdir()):
        for p in ours.iterdir():
            os.replace(p, ckpt / p.name)
        ours.rmdir()
        logger().info("train: checkpoints of this run (key %s) moved back from %s; resuming them", key, ours)
    return aside


def _set_aside(ckpt: Path, key: str) -> list[Path]:
    """The copies of run `key` set aside in `ckpt`, oldest first: superseded-KEY, then superseded-KEY-2, ..."""
    found = []
    for p in ckpt.glob(f"superseded-{key}*"):
        rest = p.name[len(f"superseded-{key}") :]
        if p.is_dir() and (rest == "" or (rest.startswith("-") and rest[1:].isdigit())):
            found.append((int(rest[1:]) if rest else 1, p))
    return [p for _, p in sorted(found)]


def _si(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def describe_line(line: str) -> str | None:
    """The trainer's JSON records as log lines a person reads; the records stay in metrics.jsonl and the
    artifacts. Other lines (warnings, tracebacks) pass through unchanged; heartbeats are not logged."""
    if not line.startswith("{"):
        return line
    try:
        ev = json.loads(line)
    except ValueError:
        return line
    kind = ev.get("event")
    if kind == "step":
        return (
            f"step {ev['step']}/{ev['steps']} · loss {ev['loss']:.3f} · {_si(ev['tokens_per_s'])} tok/s"
            f" · lr {ev['lr']:.2e} · MaxVio {ev.get('max_vio_mean', 0.0):.2f}"
        )
    if kind == "start":
        resumed = f", resumed from {Path(ev['resumed_from']).name}" if ev.get("resumed_from") else ""
        parallel = f" ({ev['parallelism']})" if ev.get("parallelism") not in (None, "none") else ""
        return (
            f"start: {_si(ev['params_total'])} parameters ({_si(ev['params_active'])} active) on {ev['device']}, "
            f"{ev['world_size']} process(es){parallel}, step {ev['step']}/{ev['steps']}{resumed}"
        )
    if kind == "checkpoint":
        return f"checkpoint {Path(ev['path']).name} written in {ev['seconds']:.1f} s"
    if kind == "done":
        return f"done: step {ev['step']}/{ev['steps']} · loss {ev['loss']:.3f} · newest {Path(ev['checkpoint']).name}"
    if kind == "error":
        return f"error at step {ev.get('step')}: {ev.get('message')}"
    if kind == "heartbeat":
        return None
    return line


class _View:
    """Keeps the Prefect view of the run current from the trainer's JSON lines.

    Each table post is a new artifact version in the server's database and a mark on the run's timeline:
    the tables follow every tenth of the run and at most one post per `every_s` otherwise (a long run:
    six an hour), never the same step twice. The progress artifact is updated in place at every step.
    """

    def __init__(self, steps: int, every_s: float = 600.0, parts: int = 10):
        self.progress = Progress("train: optimizer steps", steps)
        self.every_s = every_s
        self.chunk = max(steps / parts, 1.0)
        self.next_step = self.chunk
        self.last_table = time.monotonic()
        self.posted_step: int | None = None
        self.last: dict[str, Any] = {}
        self.error: str | None = None
        self.hang_step: int = 0

    def __call__(self, line: str) -> None:
        if not line.startswith("{"):
            # The trainer's own one-line error (config, input, disk), printed before its log exists or from
            # any rank (torchrun may prefix "[rank0]:"): the stage's failure says it instead of "exit code 2".
            head, sep, message = line.partition(TRAINER_ERROR_PREFIX)
            if sep and self.error is None and len(head) <= 16:
                # Two ranks printing at once can share a line: keep the first message only.
                self.error = message.split(TRAINER_ERROR_PREFIX)[0].strip()
            return
        try:
            ev = json.loads(line)
        except ValueError:
            return
        kind = ev.get("event")
        if kind == "step":
            self.last = ev
            self.progress.set(ev["step"])
            step = ev["step"]
            if step >= self.next_step or step == ev["steps"] or time.monotonic() - self.last_table > self.every_s:
                self.tables(ev)
        elif kind == "error":
            self.error = ev.get("message")
        if "step" in ev:
            self.hang_step = ev["step"]

    def tables(self, ev: dict[str, Any]) -> None:
        if not ev or ev.get("step") == self.posted_step:
            return
        self.posted_step, self.last_table = ev["step"], time.monotonic()
        self.next_step = (ev["step"] // self.chunk + 1) * self.chunk
        table_artifact(
            "train-progress",
            [
                {
                    "step": f"{ev['step']}/{ev['steps']}",
                    "loss": round(ev["loss"], 4),
                    "ce_loss": round(ev["ce_loss"], 4),
                    "tokens/s": round(ev["tokens_per_s"], 1),
                    "lr": f"{ev['lr']:.3g}",
                }
            ],
            description="train: latest logged step",
        )
        table_artifact("train-moe-health", moe_rows(ev.get("moe", {})), description="MoE load per layer (last step)")


def moe_rows(moe: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "layer": name,
            "max_vio": round(s["max_vio"], 4),
            "dead_experts": s["dead_experts"],
            "tokens_per_expert": " ".join(str(int(t)) for t in s["tokens_per_expert"]),
        }
        for name, s in moe.items()
    ]


def loss_curve_png(metrics: list[dict[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in metrics]
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    ax.plot(steps, [m["ce_loss"] for m in metrics], label="cross entropy")
    if any(m.get("mtp_loss") for m in metrics):
        ax.plot(steps, [m["mtp_loss"] for m in metrics], label="MTP", alpha=0.7)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    path = Path(workdir) / "checkpoints" / "metrics.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return [e for e in lines if e.get("event") == "step"]


def final_figures(metrics: list[dict[str, Any]], start: dict[str, Any] | None = None) -> dict[str, Any]:
    last = metrics[-1]
    tail = metrics[-5:]
    return {
        "steps": last["step"],
        "tokens": last["tokens"],
        "loss": round(last["loss"], 4),
        "ce_loss": round(last["ce_loss"], 4),
        "mtp_loss": round(last["mtp_loss"], 4),
        "balance_loss": float(f"{last['balance_loss']:.4g}"),  # ~1e-4: 4 significant digits, not 4 decimals
        "max_vio_mean": round(last["max_vio_mean"], 4),
        "tokens_per_s": round(sum(m["tokens_per_s"] for m in tail) / len(tail), 1),
        "tflops_per_device": round(sum(m["tflops"] for m in tail) / len(tail), 4),
        "mfu": round(sum(m["mfu"] for m in tail) / len(tail), 5),
        "peak_mem_gib": round(max(m["peak_mem_gib"] for m in metrics), 3),
        **({"params_total": start["params_total"], "params_active": int(start["params_active"])} if start else {}),
    }


def report_run(workdir: str, figures: dict[str, Any]) -> None:
    """Loss curve (PNG in WORKDIR/checkpoints and inline in the artifact) and a table of final figures."""
    metrics = read_metrics(workdir)
    png = loss_curve_png(metrics)
    (Path(workdir) / "checkpoints" / "loss_curve.png").write_bytes(png)
    rows = "\n".join(f"| {k} | {v} |" for k, v in figures.items())
    md = (
        "# Training\n\n"
        f"![loss curve](data:image/png;base64,{base64.b64encode(png).decode()})\n\n"
        f"| figure | value |\n|---|---|\n{rows}\n"
    )
    markdown_artifact("train-report", md, description="loss curve and final figures")


@task(name="train", retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_unless_bad_input)
def train_task(
    model: ModelArgs, train: TrainArgs, workdir: str, key: str, nproc: int = 1, launch: LaunchConfig | None = None
) -> dict[str, Any]:
    """Launch the trainer and stream it; returns the final figures. Resumes from the newest checkpoint.

    `key` is the train stage's key, recorded beside the checkpoints so a later run resumes only its own.
    """
    log = logger()
    config_path = write_run_config(model, train, workdir, key)
    cmd = trainer_command(config_path, workdir, nproc, launch)
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{WATCH_PID_ENV: str(os.getpid())})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    view = _View(train.steps)
    start: dict[str, Any] = {}

    def on_line(line: str) -> None:
        if line.startswith('{"event": "start"'):
            start.update(json.loads(line))
        view(line)

    log.info("train: %s", " ".join(cmd))
    hang_s = float(train.hang_timeout_s or 0) or None
    try:
        code = run_streaming(
            cmd, env=env, cwd=str(REPO), on_line=on_line, hang_timeout_s=hang_s, describe=describe_line
        )
    except HangError:
        log.error("train: HUNG — no step for %.0f s after step %s; trainer killed", hang_s, view.hang_step)
        raise
    if code != 0:
        # The trainer prints its own error line for bad config or input (exit 2) and a non-finite loss (exit 3):
        # the same again on a retry. torchrun exits 1 whatever its ranks did, so the line decides, not the code.
        # A bug prints a traceback instead, exits 1 and is retried like a crash.
        if view.error is not None or code in (2, 3):
            raise TrainerError(view.error or f"trainer exited with code {code} (see the log above)")
        raise RuntimeError(f"trainer exited with code {code} (see the log above)")
    metrics = read_metrics(workdir)
    figures = final_figures(metrics, start or None)
    view.progress.finish()
    if view.last:
        view.tables(view.last)
    report_run(workdir, figures)
    return figures
