"""Pretraining entry point: `python -m model.train --config resolved.json [--workdir DIR]`, or under
`torchrun --nproc-per-node N [--nnodes ...] -m model.train ...` for DDP / FSDP2.

Imports only torch, numpy, safetensors and the standard library (YAML configs only if PyYAML is there),
so it runs on a bare GPU worker. Output contract, read by `tasks/train.py`: one JSON object per line on
stdout (rank 0 only): `start`, `step` (every `log_every` steps, the first and the last), `checkpoint`,
`heartbeat` (a slow run is not a hung one), `done`, `error`; the same lines, heartbeats aside, go to
`WORKDIR/checkpoints/metrics.jsonl`. Exit codes: 0 done, 2 bad config or checkpoint, 3 non-finite loss.

Per optimizer step (DeepSeek-V3 §4.2): the global batch is split over ranks and micro-batches, each
micro-batch's loss is weighted by its share of the step's labelled tokens (exact accumulation, whatever
the split), gradients are clipped to 1.0, AdamW steps with the scheduled LR, and the expert biases move
by γ over the whole global batch's token counts (all-reduced inside `update_expert_bias`).
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

from crawl2score.model.config import ModelArgs
from crawl2score.model.model import Transformer
from crawl2score.model.moe import update_expert_bias
from crawl2score.model.parallel import Parallel, clip_grad_norm_
from crawl2score.model.schedule import batch_size_at, bias_speed_at, lr_at, mtp_lambda_at
from crawl2score.model.train_checkpoint import load_checkpoint_into, newest_checkpoint, save_checkpoint, seed_all
from crawl2score.model.train_config import TrainArgs

STALL_ENV = "CRAWL2SCORE_TRAIN_STALL_AT_STEP"  # test hook: stop making steps after this one (hang/kill tests)
WATCH_PID_ENV = "CRAWL2SCORE_TRAIN_WATCH_PID"  # exit when this process (the Prefect task) is gone
# Dense bf16 peaks for MFU. H200: the matmul peak measured on this project's machine (740), not the
# 989 of the data sheet; set `train.peak_tflops` to use another.
PEAK_TFLOPS = {"H200": 740.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


# ---- configuration ------------------------------------------------------------------------------------
def read_config(path: str) -> dict[str, Any]:
    """The resolved project config as JSON, what the train task writes (`crawl2score train --dry-run` shows
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
            raise ValueError(f"{tokens_dir}: {self.shards.num_tokens} tokens hold no sequence of {seq_len + 1}")
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
def active_params(model: Transformer) -> tuple[int, float]:
    """(total parameters, parameters active per token excluding the embedding lookup); the head counts
    once per MTP depth too, since every depth runs it."""
    a = model.args
    total, active = 0, 0.0
    for name, p in model.named_parameters():
        total += p.numel()
        if name.startswith("embed."):
            continue
        if ".experts." in name:
            active += p.numel() * a.n_activated_experts / a.n_routed_experts
        elif name.startswith("head."):
            active += p.numel() * (1 + a.n_mtp_layers)
        else:
            active += p.numel()
    return total, active


def flops_per_token(model: Transformer, seq_len: int) -> float:
    """Training FLOPs per token, torchtitan's convention: 6·N_active + 6·L·H·(d_qk + d_v)·S, attention
    counted at full S (not halved for causality), L including the MTP blocks."""
    a = model.args
    _, n_active = active_params(model)
    layers = a.n_layers + a.n_mtp_layers
    return 6 * n_active + 6 * layers * a.n_heads * (a.qk_head_dim + a.v_head_dim) * seq_len


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
            print(f"model.train: watched process {pid} is gone; exiting", file=sys.stderr, flush=True)
            os._exit(4)


def _all_sum(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(t)
    return t


def train(cfg: dict[str, Any], workdir: Path) -> int:
    args = TrainArgs.from_dict(cfg.get("train", {}))
    model_args = model_args_from(cfg.get("model", {}))
    rank, world, device = setup_distributed(args)
    if args.global_batch_size % world:
        raise ValueError(f"train.global_batch_size {args.global_batch_size} is not a multiple of {world} ranks")
    ckpt_dir = workdir / "checkpoints"
    data = SequenceStream(args.tokens_dir or workdir / "tokens", args.seq_len, args.seed)
    loss = ce = float("nan")
    if data.shards.vocab_size > model_args.vocab_size:
        raise ValueError(f"tokens use {data.shards.vocab_size} ids; model.vocab_size is {model_args.vocab_size}")

    seed_all(args.seed)  # the same initial weights on every rank; numpy and Python streams too
    with torch.device(device):
        model = Transformer(model_args)
    n_total, n_active = active_params(model)
    fpt = flops_per_token(model, args.seq_len)
    if args.compile:
        for block in list(model.layers) + [m.block for m in model.mtp]:
            block.compile()
    par = Parallel(model, args.parallelism, device)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(args.beta1, args.beta2),
        fused=device.type == "cuda",
    )
    fp = fingerprint(model_args, args)
    step, position = 0, 0
    resume = newest_checkpoint(ckpt_dir)
    if resume is not None:
        state = json.loads((resume / "train_state.json").read_text())
        if state.get("fingerprint") != fp:
            raise ValueError(
                f"{resume} was written by a different model/train config; remove {ckpt_dir} or rerun with --force"
            )
        state = load_checkpoint_into(resume, model, optimizer)
        step, position = int(state["step"]), int(state["data_position"])
        loss, ce = state.get("loss", loss), state.get("ce_loss", ce)
    peak = args.peak_tflops or default_peak_tflops(device)
    log = Log(ckpt_dir / "metrics.jsonl", rank, step, max(args.hang_timeout_s / 4, 1.0))
    log.emit(
        "start",
        step=step,
        steps=args.steps,
        resumed_from=str(resume) if resume else None,
        world_size=world,
        device=str(device),
        parallelism=par.mode,
        params_total=n_total,
        params_active=n_active,
        flops_per_token=fpt,
        peak_tflops=peak,
        data_sequences=data.n,
        fingerprint=fp,
    )

    use_bf16 = args.dtype == "bf16" or (args.dtype == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    loss_fn = par.loss_fn()
    stall_at = int(os.environ.get(STALL_ENV, "0") or 0)
    model.train()
    t_log, tokens_since, ckpt_s, last_saved = time.perf_counter(), 0, 0.0, step
    while step < args.steps:
        step += 1
        B = batch_size_at(args, step, world)
        b = B // world
        tokens_np, docs_np = data.batch(position + rank * b, b)
        tokens = torch.from_numpy(tokens_np).to(device)
        docs = torch.from_numpy(docs_np).to(device)
        inputs, labels = tokens[:, :-1], tokens[:, 1:]
        doc_ids = docs[:, :-1] if args.mask_document_boundaries else None
        micro = [(s, min(s + args.micro_batch_size, b)) for s in range(0, b, args.micro_batch_size)]
        # Exact token weighting: each micro-batch's mean loss times its share of the global step's
        # labelled tokens (x world: DDP/FSDP average gradients over ranks).
        n_global = _all_sum(torch.tensor([float((labels != -100).sum())], device=device), world).item()
        mtp_lambda = mtp_lambda_at(args, step)
        sums = torch.zeros(4, device=device)
        for j, (s, e) in enumerate(micro):
            par.set_grad_sync(j == len(micro) - 1)
            with autocast():
                out = loss_fn(
                    inputs[s:e],
                    labels[s:e],
                    None if doc_ids is None else doc_ids[s:e],
                    seq_aux_alpha=args.seq_aux_alpha,
                    mtp_lambda=mtp_lambda,
                    loss_chunk=args.loss_chunk,
                )
            (out.loss * (out.n_tokens * world / n_global)).backward()
            parts = torch.stack([out.loss.detach(), out.ce_loss, out.mtp_loss, out.balance_loss]).float()
            sums += parts * out.n_tokens
        loss, ce, mtp, bal = (_all_sum(sums, world) / n_global).tolist()
        if not math.isfinite(loss):
            msg = f"loss is {loss} at step {step}; stopped without saving (last checkpoint: step {last_saved})"
            log.emit("error", step=step, message=msg)
            print(f"model.train: error: {msg}", file=sys.stderr, flush=True)
            return 3
        grad_norm = clip_grad_norm_(list(model.parameters()), args.grad_clip).item()
        lr = lr_at(args, step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        moe = update_expert_bias(model, bias_speed_at(args, step))
        position += B
        tokens_since += B * args.seq_len

        if step % args.log_every == 0 or step == 1 or step == args.steps:
            elapsed = max(time.perf_counter() - t_log - ckpt_s, 1e-9)
            tps = tokens_since / elapsed
            tflops = fpt * tps / 1e12 / world  # per device
            vio = {k: v["max_vio"] for k, v in moe.items()}
            log.emit(
                "step",
                step=step,
                steps=args.steps,
                loss=loss,
                ce_loss=ce,
                mtp_loss=mtp,
                balance_loss=bal,
                grad_norm=grad_norm,
                lr=lr,
                batch_size=B,
                tokens=position * args.seq_len,
                tokens_per_s=tps,
                tflops=tflops,
                mfu=tflops / peak,
                peak_mem_gib=peak_mem_gib(device),
                max_vio=vio,
                max_vio_mean=sum(vio.values()) / max(len(vio), 1),
                moe=moe,
            )
            t_log, tokens_since, ckpt_s = time.perf_counter(), 0, 0.0
        if step % args.checkpoint_every == 0 or step == args.steps:
            t0 = time.perf_counter()
            path = save_checkpoint(
                ckpt_dir,
                step,
                model,
                optimizer,
                {"data_position": position, "fingerprint": fp, "world_size": world, "loss": loss, "ce_loss": ce},
                keep_last=args.keep_last,
            )
            ckpt_s += time.perf_counter() - t0
            last_saved = step
            log.emit("checkpoint", step=step, path=str(path), seconds=time.perf_counter() - t0)
        log.heartbeat(step)
        _exit_if_orphaned()
        while step == stall_at:  # test hook: a trainer that stops making steps (killed from outside)
            time.sleep(1.0)
            _exit_if_orphaned()
    log.emit("done", step=step, steps=args.steps, loss=loss, ce_loss=ce, checkpoint=str(ckpt_dir / f"step-{step}"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="resolved config (JSON; YAML if PyYAML is installed)")
    parser.add_argument("--workdir", default=None, help="work directory (default: the config's `workdir`)")
    opts = parser.parse_args(argv)
    try:
        cfg = read_config(opts.config)
        code = train(cfg, Path(opts.workdir or cfg.get("workdir", "work")).resolve())
    except (ValueError, KeyError, OSError) as exc:  # OSError: a missing input, a full disk
        print(f"model.train: error: {exc}", file=sys.stderr, flush=True)
        code = 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
