"""Pretraining entry point: `python -m crawl2score.model.train --config resolved.json [--workdir DIR]`, or under
`torchrun --nproc-per-node N [--nnodes ...] -m crawl2score.model.train ...` for DDP / FSDP2.

Imports only torch, numpy, safetensors and the standard library (YAML configs only if PyYAML is there),
so it runs on a bare GPU worker. Output contract, read by `tasks/train.py`: one JSON object per line on
stdout (rank 0 only): `start`, `step` (every `log_every` steps, the first and the last), `checkpoint`,
`heartbeat` (a slow run is not a hung one), `done`, `error`; the same lines, heartbeats aside, go to
`WORKDIR/checkpoints/metrics.jsonl`. Exit codes: 0 done, 2 bad config or checkpoint, 3 non-finite loss.

The run is a `Trainer` in torchtitan's shape: `__init__` builds (process group, data, model, parallel
wrapping, optimizer, resume, schedule), `train_step` makes one optimizer step, `record` logs and
checkpoints it, and `train` is the loop over both. Per optimizer step (DeepSeek-V3 §4.2): the global
batch (ramped in tokens, `model.schedule`) is split over ranks and micro-batches, each micro-batch's
loss is weighted by its share of the step's labelled tokens (exact accumulation, whatever the split),
gradients are clipped to 1.0, AdamW steps with the scheduled LR, and the expert biases move by γ over
the whole global batch's token counts (all-reduced inside `update_expert_bias`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from crawl2score.errors import BadInput
from crawl2score.model.config import ModelArgs
from crawl2score.model.expert_parallel import (
    clip_grad_norm_ep_,
    expert_parallel_groups,
    gathered_experts,
    is_expert_param,
    reduce_expert_grads,
    shard_experts,
    take_fanout,
)
from crawl2score.model.info import train_active_params, train_flops_per_token
from crawl2score.model.model import Transformer
from crawl2score.model.moe import update_expert_bias
from crawl2score.model.parallel import Parallel, clip_grad_norm_
from crawl2score.model.schedule import Schedule
from crawl2score.model.train_checkpoint import (
    load_checkpoint_into,
    newest_checkpoint,
    read_train_state,
    save_checkpoint,
    seed_all,
)
from crawl2score.model.train_config import TrainArgs

WATCH_PID_ENV = "CRAWL2SCORE_TRAIN_WATCH_PID"  # exit when this process (the Prefect task) is gone
# Dense bf16 peaks for MFU. H200: the matmul peak measured on this project's machine (740), not the
# 989 of the data sheet; set `train.peak_tflops` to use another.
PEAK_TFLOPS = {"H200": 740.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


# ---- configuration ------------------------------------------------------------------------------------
def read_config(path: str) -> dict[str, Any]:
    """The resolved project config as JSON, what the train task writes (`crawl2score train --prepare` writes
    it). JSON only: the trainer runs on a bare GPU worker with torch and nothing else."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def model_args_from(section: dict[str, Any]) -> ModelArgs:
    section = dict(section)
    if "preset" in section:
        from crawl2score.model.presets import get_preset

        base = get_preset(section.pop("preset")).to_dict()
        base.update(section)
        section = base
    return ModelArgs.from_dict(section)


def fingerprint(model_args: ModelArgs, train: TrainArgs) -> str:
    blob = json.dumps({"model": model_args.to_dict(), "train": train.fingerprint_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---- data ---------------------------------------------------------------------------------------------
class SequenceStream:
    """Fixed-length sequences in a seeded order: global index g is sequence perm_e[g mod n] of epoch
    e = g div n, with perm_e = permutation(n) seeded by (seed, e). The data position is one integer g,
    the same on every rank, so a resume (with any world size) continues at exactly the next sequence."""

    def __init__(self, tokens_dir: str | os.PathLike, seq_len: int, seed: int):
        from crawl2score.model.shards import TokenShards

        self.shards = TokenShards(tokens_dir)
        self.seq_len = seq_len
        self.seed = seed
        self.n = self.shards.num_sequences(seq_len)
        if self.n < 1:
            raise BadInput(f"{tokens_dir}: {self.shards.num_tokens} tokens hold no sequence of {seq_len + 1}")
        self._perm: tuple[int, np.ndarray] | None = None

    def _index(self, g: int) -> int:
        epoch, i = divmod(g, self.n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return int(self._perm[1][i])

    def batch(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and document ids of sequences start..start+count-1, each [count, seq_len + 1]."""
        idx = [self._index(g) for g in range(start, start + count)]
        tokens = np.stack([self.shards.sequence(i, self.seq_len) for i in idx])
        docs = np.stack([self.shards.doc_ids(i, self.seq_len) for i in idx])
        return tokens, docs


# ---- figures ------------------------------------------------------------------------------------------
def default_peak_tflops(device: torch.device) -> float:
    """Per-device dense peak: the table above for known GPUs; on CPU a rough fp32 AVX2-FMA figure
    (32 FLOP/cycle/core at 3 GHz), only to make MFU comparable between CPU runs."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in PEAK_TFLOPS.items() if k in name), 312.0)
    return (os.cpu_count() or 1) * 3.0e9 * 32 / 1e12


def peak_mem_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ---- logging ------------------------------------------------------------------------------------------
class Log:
    """JSON lines on stdout (rank 0) and into metrics.jsonl; heartbeats keep a slow run from looking hung."""

    def __init__(self, path: Path, rank: int, resume_step: int, heartbeat_s: float):
        self.rank, self.path, self.heartbeat_s = rank, path, heartbeat_s
        self.last = time.monotonic()
        if rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            kept = []
            if resume_step > 0 and path.exists():  # drop what the killed run logged after its checkpoint
                kept = [ln for ln in path.read_text().splitlines() if _line_step(ln) <= resume_step]
            path.write_text("".join(ln + "\n" for ln in kept))

    def emit(self, event: str, **fields: Any) -> None:
        if self.rank != 0:
            return
        line = json.dumps({"event": event, **fields}, default=float)
        print(line, flush=True)
        if event != "heartbeat":
            with open(self.path, "a") as f:
                f.write(line + "\n")
        self.last = time.monotonic()

    def heartbeat(self, step: int) -> None:
        if time.monotonic() - self.last > self.heartbeat_s:
            self.emit("heartbeat", step=step)


def _line_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62


# ---- the run ------------------------------------------------------------------------------------------
def setup_distributed(train: TrainArgs) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if train.device == "auto":
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(train.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInput(f"train.device {train.device}: this machine has no CUDA device torch can use")
        if device.index is None:  # "cuda" under torchrun: each rank its own GPU, as "auto" does
            device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank() if world > 1 else 0), world, device


def _exit_if_orphaned() -> None:
    """A task killed with SIGKILL cannot kill its trainer; the trainer notices and frees the GPU itself."""
    pid = int(os.environ.get(WATCH_PID_ENV, "0") or 0)
    if pid:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"crawl2score.model.train: watched process {pid} is gone; exiting", file=sys.stderr, flush=True)
            os._exit(4)


def _all_sum(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(t)
    return t


class Trainer:
    """One training run: built in `__init__`, advanced by `train_step`, recorded by `record`, driven by
    `train`. The bare model, optimizer and schedule are attributes, so a reader (or a test) can build a
    Trainer and step it by hand."""

    def __init__(self, cfg: dict[str, Any], workdir: Path):
        self.args = args = TrainArgs.from_dict(cfg.get("train", {}))
        self.model_args = model_args_from(cfg.get("model", {}))
        if args.seq_len > self.model_args.max_seq_len:  # the rotary tables stop at max_seq_len
            raise BadInput(f"train.seq_len {args.seq_len} exceeds model.max_seq_len {self.model_args.max_seq_len}")
        self.rank, self.world, self.device = setup_distributed(args)
        if args.global_batch_size % self.world:
            raise BadInput(f"train.global_batch_size {args.global_batch_size} is not a multiple of {self.world} ranks")
        self.ckpt_dir = workdir / "checkpoints"
        self.data = SequenceStream(args.tokens_dir or workdir / "tokens", args.seq_len, args.seed)
        if self.data.shards.vocab_size > self.model_args.vocab_size:
            raise BadInput(
                f"tokens use {self.data.shards.vocab_size} ids; model.vocab_size is {self.model_args.vocab_size}"
            )
        self.model = self._build_model()
        self.ep_group = self.ep_replicas = None
        experts: tuple[str, ...] = ()
        if args.expert_parallel > 1:  # groups first: every rank must create every group
            self.ep_group, self.ep_replicas = expert_parallel_groups(self.world, args.expert_parallel)
            experts = tuple(n for n, _ in self.model.named_parameters() if is_expert_param(n))
        self.parallel = Parallel(self.model, args.parallelism, self.device, ignore=experts)
        self.optimizer = self._build_optimizer()
        self.schedule = Schedule.build(args, self.world)
        self.fingerprint = fingerprint(self.model_args, args)
        self.step, self.position = 0, 0  # optimizer steps done, sequences consumed (global)
        self.loss = self.ce_loss = float("nan")
        self.resumed_from = self._resume()
        if self.ep_group is not None:  # resumed whole, then each rank keeps its experts (and their moments)
            shard_experts(self.model, self.ep_group, self.optimizer)
        self.flops_per_token = train_flops_per_token(self.model_args, args.seq_len)
        self.peak_tflops = args.peak_tflops or default_peak_tflops(self.device)
        use_bf16 = args.dtype == "bf16" or (args.dtype == "auto" and self.device.type == "cuda")
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
        )
        self.log = Log(self.ckpt_dir / "metrics.jsonl", self.rank, self.step, max(args.hang_timeout_s / 4, 1.0))
        self._t_log, self._tokens_since, self._ckpt_s, self.last_saved = time.perf_counter(), 0, 0.0, self.step

    # ---- build ------------------------------------------------------------------------------------------
    def _build_model(self) -> Transformer:
        seed_all(self.args.seed)  # the same initial weights on every rank; numpy and Python streams too
        with torch.device(self.device):
            model = Transformer(self.model_args)
        if self.args.compile:
            for block in list(model.layers) + [m.block for m in model.mtp]:
                block.compile()
        model.train()
        return model

    def _build_optimizer(self) -> torch.optim.Optimizer:
        a = self.args
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        return torch.optim.AdamW(
            [{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=a.lr,
            betas=(a.beta1, a.beta2),
            fused=self.device.type == "cuda",
        )

    def _resume(self) -> Path | None:
        """Continue from the newest complete checkpoint of the same config, if any."""
        resume = newest_checkpoint(self.ckpt_dir)
        if resume is None:
            return None
        state = read_train_state(resume)
        if state.get("fingerprint") != self.fingerprint:
            raise BadInput(
                f"{resume} was written by a different model/train config; remove {self.ckpt_dir} or rerun with --force (from the UI: force)"
            )
        state = load_checkpoint_into(resume, self.model, self.optimizer)
        self.step, self.position = int(state["step"]), int(state["data_position"])
        self.loss, self.ce_loss = state.get("loss", self.loss), state.get("ce_loss", self.ce_loss)
        return resume

    # ---- step -------------------------------------------------------------------------------------------
    def train_step(self) -> dict[str, Any]:
        """One optimizer step on the next global batch; returns its figures (loss terms, grad norm, LR,
        batch size, per-layer MoE load)."""
        a, device, world = self.args, self.device, self.world
        tokens_before = self.position * a.seq_len
        self.step += 1
        B = self.schedule.batch_size(tokens_before)
        b = B // world
        tokens_np, docs_np = self.data.batch(self.position + self.rank * b, b)
        tokens = torch.from_numpy(tokens_np).to(device)
        inputs, labels = tokens[:, :-1], tokens[:, 1:]
        doc_ids = torch.from_numpy(docs_np).to(device)[:, :-1] if a.mask_document_boundaries else None
        micro = [(s, min(s + a.micro_batch_size, b)) for s in range(0, b, a.micro_batch_size)]
        # Exact token weighting: each micro-batch's mean loss times its share of the global step's
        # labelled tokens (x world: DDP/FSDP average gradients over ranks).
        n_global = _all_sum(torch.tensor([float((labels != -100).sum())], device=device), world).item()
        mtp_lambda = self.schedule.mtp_lambda(tokens_before)
        loss_fn = self.parallel.loss_fn()
        sums = torch.zeros(4, device=device)
        for j, (s, e) in enumerate(micro):
            self.parallel.set_grad_sync(j == len(micro) - 1)
            with self.autocast():
                out = loss_fn(
                    inputs[s:e],
                    labels[s:e],
                    None if doc_ids is None else doc_ids[s:e],
                    seq_aux_alpha=a.seq_aux_alpha,
                    mtp_lambda=mtp_lambda,
                    loss_chunk=a.loss_chunk,
                )
            (out.loss * (out.n_tokens * world / n_global)).backward()
            parts = torch.stack([out.loss.detach(), out.ce_loss, out.mtp_loss, out.balance_loss]).float()
            sums += parts * out.n_tokens
        if self.ep_group is not None:
            reduce_expert_grads(self.model, world, self.ep_replicas)
        loss, ce, mtp, bal = (_all_sum(sums, world) / n_global).tolist()
        self.loss, self.ce_loss = loss, ce
        if not math.isfinite(loss):  # nothing applied: the weights stay those of the last good step
            self.optimizer.zero_grad(set_to_none=True)
            return {"step": self.step, "loss": loss}
        if self.ep_group is not None:
            grad_norm = clip_grad_norm_ep_(self.model, a.grad_clip, self.ep_group).item()
        else:
            grad_norm = clip_grad_norm_(list(self.model.parameters()), a.grad_clip).item()
        lr = self.schedule.lr(self.step, tokens_before)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        moe = update_expert_bias(self.model, self.schedule.bias_speed(tokens_before))
        self.position += B
        self._tokens_since += B * a.seq_len
        figures = {"ep_fanout": take_fanout(self.model)} if self.ep_group is not None else {}
        return {
            **figures,
            "step": self.step,
            "loss": loss,
            "ce_loss": ce,
            "mtp_loss": mtp,
            "balance_loss": bal,
            "grad_norm": grad_norm,
            "lr": lr,
            "batch_size": B,
            "moe": moe,
        }

    # ---- loop -------------------------------------------------------------------------------------------
    def record(self, figures: dict[str, Any]) -> None:
        """Log (every `log_every` steps, the first and the last), checkpoint, heartbeat, orphan check."""
        a, step = self.args, self.step
        if step % a.log_every == 0 or step == 1 or step == a.steps:
            elapsed = max(time.perf_counter() - self._t_log - self._ckpt_s, 1e-9)
            tps = self._tokens_since / elapsed
            tflops = self.flops_per_token * tps / 1e12 / self.world  # per device
            moe = figures["moe"]
            vio = {k: v["max_vio"] for k, v in moe.items()}
            self.log.emit(
                "step",
                **{k: v for k, v in figures.items() if k != "moe"},
                steps=a.steps,
                tokens=self.position * a.seq_len,
                tokens_per_s=tps,
                tflops=tflops,
                mfu=tflops / self.peak_tflops,
                peak_mem_gib=peak_mem_gib(self.device),
                max_vio=vio,
                max_vio_mean=sum(vio.values()) / max(len(vio), 1),
                moe=moe,
            )
            self._t_log, self._tokens_since, self._ckpt_s = time.perf_counter(), 0, 0.0
        if step % a.checkpoint_every == 0 or step == a.steps:
            t0 = time.perf_counter()
            ep = self.ep_group is not None
            whole = gathered_experts(self.model, self.optimizer) if ep else contextlib.nullcontext()
            with whole:
                path = self._save()
            self._ckpt_s += time.perf_counter() - t0
            self.last_saved = step
            self.log.emit("checkpoint", step=step, path=str(path), seconds=time.perf_counter() - t0)
        self.log.heartbeat(step)
        _exit_if_orphaned()

    def _save(self) -> Path:
        return save_checkpoint(
            self.ckpt_dir,
            self.step,
            self.model,
            self.optimizer,
            {
                "data_position": self.position,
                "fingerprint": self.fingerprint,
                "world_size": self.world,
                "expert_parallel": self.args.expert_parallel,
                "loss": self.loss,
                "ce_loss": self.ce_loss,
            },
            keep_last=self.args.keep_last,
        )

    def emit_start(self) -> None:
        self.log.emit(
            "start",
            step=self.step,
            steps=self.args.steps,
            resumed_from=str(self.resumed_from) if self.resumed_from else None,
            world_size=self.world,
            expert_parallel=self.args.expert_parallel,
            device=str(self.device),
            parallelism=self.parallel.mode,
            params_total=sum(p.numel() for p in self.model.parameters()),
            params_active=train_active_params(self.model_args),
            flops_per_token=self.flops_per_token,
            peak_tflops=self.peak_tflops,
            run_tokens=self.schedule.run_tokens,
            warmup_steps=self.schedule.warmup_steps,
            data_sequences=self.data.n,
            fingerprint=self.fingerprint,
        )

    def train(self) -> int:
        """Steps to `train.steps`; 0 when done, 3 (nothing saved) on a non-finite loss."""
        self.emit_start()
        self._t_log = time.perf_counter()
        while self.step < self.args.steps:
            figures = self.train_step()
            if not math.isfinite(figures["loss"]):
                msg = (
                    f"loss is {figures['loss']} at step {self.step}; stopped without saving "
                    f"(last checkpoint: step {self.last_saved})"
                )
                self.log.emit("error", step=self.step, message=msg)
                print(f"crawl2score.model.train: error: {msg}", file=sys.stderr, flush=True)
                return 3
            self.record(figures)
        self.log.emit(
            "done",
            step=self.step,
            steps=self.args.steps,
            loss=self.loss,
            ce_loss=self.ce_loss,
            checkpoint=str(self.ckpt_dir / f"step-{self.step}"),
        )
        return 0


def train(cfg: dict[str, Any], workdir: Path) -> int:
    return Trainer(cfg, workdir).train()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crawl2score.model.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="resolved config (JSON; YAML if PyYAML is installed)")
    parser.add_argument("--workdir", default=None, help="work directory (default: the config's `workdir`)")
    opts = parser.parse_args(argv)
    try:
        cfg = read_config(opts.config)
        code = train(cfg, Path(opts.workdir or cfg.get("workdir", "work")).resolve())
    # The trainer's own checks (BadInput) and the environment (OSError: a missing input, a full disk) are one
    # line and exit 2, which the train task does not retry; anything else is a bug and keeps its traceback.
    except (BadInput, OSError) as exc:
        print(f"crawl2score.model.train: error: {exc}", file=sys.stderr, flush=True)
        code = 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
