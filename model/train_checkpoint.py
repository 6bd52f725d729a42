"""Full training checkpoints: everything a run needs to continue bit-for-bit from step N.

Layout of `checkpoints/step-<N>/`:

  model.safetensors, config.json   the full weights (expert biases included) + ModelArgs: what
                                   `model.load_checkpoint` and evaluation read
  optimizer.safetensors            AdamW moments keyed `<param>.<exp_avg|exp_avg_sq>` (replicated runs)
  sharded/shard-*.safetensors      FSDP2 runs: weights and moments as each rank holds them, written and
                                   read through torch.distributed.checkpoint's safetensors storage
                                   (offsets in the file headers, so another world size can reshard)
  rng-rank<R>.safetensors          rank R's generator states: torch CPU, every CUDA device, numpy's
                                   global and Python's `random` (Mersenne Twister words as tensors, the
                                   few scalars in the header), so a resume continues every stream exactly
  train_state.json                 step, data position, per-parameter AdamW step counts, param-group
                                   hyper-parameters, config fingerprint; written last

Nothing here is a pickle: tensors are safetensors and the rest JSON, so loading never runs code (DCP's
default `.metadata` file is a pickle, hence its safetensors storage). A save builds `.step-<N>.tmp/`,
fsyncs every file, renames it to `step-<N>` and only then rewrites `latest` (atomically), so a kill at
any moment leaves the previous checkpoint complete and named. The last `keep_last` steps are kept.
A write that fails (disk full) removes its temporary directory and raises `CheckpointWriteError`, one
line naming the step and the cause; the previous checkpoint and `latest` are untouched.

Fault injection (tests/faults/): `CRAWL2SCORE_CKPT_FAULT=<kill|enospc>@<step>:<point>` makes the save of
`step` SIGKILL its own process, or raise ENOSPC, right after `point`, one of `FAULT_POINTS`. An
environment hook in the writer, so the trainer under test is the real one, launched the real way.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from torch import nn

from crawl2score.model.checkpoint import (
    CONFIG,
    LATEST,
    WEIGHTS,
    CheckpointReadError,
    mark_latest,
    model_state_dict,
    read_weights,
    save_tensors,
    tensors_problem,
)

STATE = "train_state.json"
OPTIM = "optimizer.safetensors"
SHARDED = "sharded"
_STEP_RE = re.compile(r"^step-(\d+)$")
FAULT_ENV = "CRAWL2SCORE_CKPT_FAULT"
# Moments in a save after which a fault can be injected, in the order they happen.
FAULT_POINTS = ("tmpdir", "weights", "config", "optimizer", "rng", "state", "fsync", "renamed", "latest", "pruned")


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (disk full, I/O error); the previous checkpoint is intact."""


def _unusable(path: Path, problem: str) -> CheckpointReadError:
    return CheckpointReadError(
        f"{path}: cannot resume from this checkpoint: {problem}; remove {path.name} to resume from an earlier "
        "step, or rerun with --force (from the UI: force) to start over"
    )


def read_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """A step dir's train_state.json (the file written last), or a CheckpointReadError naming it."""
    path = Path(path)
    try:
        state = json.loads((path / STATE).read_text())
    except (OSError, ValueError) as exc:
        raise _unusable(path, f"{STATE} cannot be read ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise _unusable(path, f"{STATE} is not a train state (a JSON {type(state).__name__})")
    expected = {"step": int, "data_position": int, "param_groups": list, "optimizer_steps": dict}
    for name, kind in expected.items():
        value = state.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            raise _unusable(path, f"{STATE}: {name} is {json.dumps(value)}, not a valid {kind.__name__}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in state["optimizer_steps"].values()):
        raise _unusable(path, f"{STATE}: optimizer_steps holds a value that is not a number")
    return state


def _read_tensors(path: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        return read_weights(path / name)
    except CheckpointReadError as exc:  # the same line, said as a resume's
        raise _unusable(path, str(exc).removeprefix(f"{path}/")) from None


def _check_against(path: Path, targets: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> None:
    """Every tensor this model and optimizer hold, with its (global) shape, is in the checkpoint."""
    problem = tensors_problem({k: tuple(v.shape) for k, v in targets.items()}, shapes)
    if problem:
        raise _unusable(path, problem)


def _fault(step: int, point: str) -> None:
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    action, _, where = spec.partition("@")
    at_step, _, at_point = where.partition(":")
    if at_point not in FAULT_POINTS:
        raise ValueError(f"{FAULT_ENV}={spec!r}: point must be one of {', '.join(FAULT_POINTS)}")
    if int(at_step) != step or at_point != point:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"injected at {point}")
    else:
        raise ValueError(f"{FAULT_ENV}={spec!r}: action must be kill or enospc")


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _is_dtensor(t: torch.Tensor) -> bool:
    return hasattr(t, "full_tensor") and hasattr(t, "placements")


def _fsync_tree(path: Path) -> None:
    """fsync every file and directory below `path`: the rename that follows must publish durable data."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def step_dirs(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete step directories (renamed into place, train state present), oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    out = []
    for p in ckpt_dir.iterdir():
        m = _STEP_RE.match(p.name)
        if m and (p / STATE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def newest_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    """The step dir to resume from: the newest complete one (normally the one `latest` names; a kill
    between the rename and the `latest` update leaves a newer complete dir, which is just as good)."""
    dirs = step_dirs(ckpt_dir)
    return dirs[-1][1] if dirs else None


def ensure_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create AdamW's moments for every parameter now, exactly as its first step would (zeros), so the
    state has a fixed set of tensors to save into and load from."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state[p]
            if "exp_avg" in st:
                continue
            on_device = group.get("capturable") or group.get("fused")
            st["step"] = torch.zeros((), dtype=torch.float32, device=p.device) if on_device else torch.tensor(0.0)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def _param_names(model: nn.Module) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters()}


def _optim_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """(moments keyed `<param>.<name>`, per-parameter step counts) — the optimizer as plain data."""
    names = _param_names(model)
    tensors: dict[str, torch.Tensor] = {}
    steps: dict[str, float] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state[p]
            name = names[id(p)]
            steps[name] = float(st["step"])
            tensors[f"{name}.exp_avg"] = st["exp_avg"]
            tensors[f"{name}.exp_avg_sq"] = st["exp_avg_sq"]
    return tensors, steps


def seed_all(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy's global and Python's `random` generators.

    All three, not just torch: a stream left to the OS's entropy differs between an uninterrupted run
    and a run restarted from scratch, so their final RNG states (and anything drawn) would too.
    """
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, header strings) holding every generator a training step may draw from."""
    tensors = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = st
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    tensors["numpy.keys"] = torch.from_numpy(keys.astype(np.int64))
    version, words, gauss_next = random.getstate()
    tensors["python.words"] = torch.tensor(words, dtype=torch.int64)
    # repr() of a float round-trips exactly; JSON keeps None apart from a number.
    meta = {
        "numpy": json.dumps([kind, int(pos), int(has_gauss), repr(float(gauss))]),
        "python": json.dumps([version, None if gauss_next is None else repr(gauss_next)]),
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    torch.set_rng_state(tensors["cpu"])
    cuda = [tensors[f"cuda.{i}"] for i in range(len(tensors)) if f"cuda.{i}" in tensors]
    if "cuda" in tensors:  # checkpoints before per-device states
        cuda = [tensors["cuda"]]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    if "numpy.keys" in tensors and "numpy" in meta:
        kind, pos, has_gauss, gauss = json.loads(meta["numpy"])
        keys = tensors["numpy.keys"].numpy().astype(np.uint32)
        np.random.set_state((kind, keys, pos, has_gauss, float(gauss)))
    if "python.words" in tensors and "python" in meta:
        version, gauss_next = json.loads(meta["python"])
        words = tuple(int(w) for w in tensors["python.words"].tolist())
        random.setstate((version, words, None if gauss_next is None else float(gauss_next)))


def _save_rng(path: Path) -> None:
    tensors, meta = _rng_state()
    save_tensors({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)


def _load_rng(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    _set_rng_state(tensors, meta)


def save_checkpoint(
    ckpt_dir: str | os.PathLike,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_state: dict[str, Any],
    keep_last: int = 3,
) -> Path:
    """Write step-<step> atomically on every rank together (a collective call); returns its path."""
    ckpt_dir = Path(ckpt_dir)
    tmp = ckpt_dir / f".step-{step}.tmp"
    try:
        return _save(ckpt_dir, tmp, step, model, optimizer, train_state, keep_last)
    except OSError as exc:
        if isinstance(exc, CheckpointWriteError):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        prev = newest_checkpoint(ckpt_dir)
        kept = f"{prev.name} is intact" if prev is not None else "no earlier checkpoint"
        cause = exc.strerror or str(exc)
        err = CheckpointWriteError(f"writing checkpoint step-{step} in {ckpt_dir} failed: {cause} ({kept})")
        err.errno = exc.errno
        raise err from exc


def _save(
    ckpt_dir: Path,
    tmp: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_state: dict[str, Any],
    keep_last: int,
) -> Path:
    rank = _rank()
    final = ckpt_dir / f"step-{step}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _fault(step, "tmpdir")
    _barrier()
    ensure_optimizer_state(optimizer)
    moments, opt_steps = _optim_tensors(model, optimizer)
    params = dict(model.named_parameters())
    sharded = any(_is_dtensor(p) for p in params.values())
    # Gathering DTensor shards is a collective, so with FSDP every rank calls it; replicated: rank 0 only.
    full_model = model_state_dict(model) if sharded or rank == 0 else {}
    if sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import HuggingFaceStorageWriter

        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        state.update({f"optim.{k}": v for k, v in moments.items()})
        dcp.save(state, storage_writer=HuggingFaceStorageWriter(str(tmp / SHARDED), save_distributed=True))
    if rank == 0:
        save_tensors(full_model, tmp / WEIGHTS, metadata={"format": "pt"})
        _fault(step, "weights")
        args = getattr(model, "args", None)
        (tmp / CONFIG).write_text(json.dumps(args.to_dict() if args else {}, indent=2) + "\n")
        _fault(step, "config")
        if not sharded:
            save_tensors({k: v.detach().cpu().contiguous() for k, v in moments.items()}, tmp / OPTIM)
        _fault(step, "optimizer")
    _save_rng(tmp / f"rng-rank{rank}.safetensors")
    _fault(step, "rng")
    _barrier()
    if rank == 0:
        groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        state_json = dict(train_state, step=step, sharded=sharded, optimizer_steps=opt_steps, param_groups=groups)
        (tmp / STATE).write_text(json.dumps(state_json, indent=1, default=str) + "\n")
        _fault(step, "state")
        _fsync_tree(tmp)
        _fault(step, "fsync")
        if final.exists():  # re-saving a step (e.g. the final one after a resume): swap atomically
            old = ckpt_dir / f".step-{step}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(ckpt_dir)
        _fault(step, "renamed")
        latest_tmp = ckpt_dir / f".{LATEST}.tmp"
        latest_tmp.write_text(final.name + "\n")
        with open(latest_tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(latest_tmp, ckpt_dir / LATEST)
        _fsync_dir(ckpt_dir)
        _fault(step, "latest")
        for _s, old_dir in step_dirs(ckpt_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old_dir, ignore_errors=True)
        _fault(step, "pruned")
    _barrier()
    return final


def load_checkpoint_into(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore weights, optimizer and this rank's RNG from a step dir; returns the train state (JSON).

    Called after the model is wrapped for parallelism and the optimizer built (a collective call when
    the checkpoint is sharded). Tensors are copied into the existing ones, so DTensor shards stay put.
    """
    path = Path(path)
    state = read_train_state(path)
    latest = path.parent / LATEST
    if _rank() == 0 and (not latest.is_file() or latest.read_text().strip() != path.name):
        # A kill between a save's rename and its `latest` update leaves `latest` naming the previous
        # step; resuming from the newer one, point `latest` at it (a finished run saves nothing more).
        mark_latest(path)
    ensure_optimizer_state(optimizer)
    moments, _ = _optim_tensors(model, optimizer)
    targets: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    targets.update({f"optim.{k}": v for k, v in moments.items()})
    if (path / SHARDED).is_dir():
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import HuggingFaceStorageReader
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        reader = HuggingFaceStorageReader(str(path / SHARDED))
        try:  # checked before the collective load, whose own error is a page per rank
            meta = reader.read_metadata().state_dict_metadata
        except Exception as exc:  # torch raises whatever its safetensors header parsing meets
            raise _unusable(path, f"{SHARDED}/ cannot be read ({exc.__class__.__name__}: {exc})") from None
        _check_against(
            path, targets, {k: tuple(m.size) for k, m in meta.items() if isinstance(m, TensorStorageMetadata)}
        )
        dcp.load(targets, storage_reader=reader)
    else:
        source = {f"model.{k}": v for k, v in _read_tensors(path, WEIGHTS).items()}
        source.update({f"optim.{k}": v for k, v in _read_tensors(path, OPTIM).items()})
        _check_against(path, targets, {k: tuple(v.shape) for k, v in source.items()})
        with torch.no_grad():
            for key, dst in targets.items():
                _copy_full_into(dst, source[key])
    names = _param_names(model)
    with torch.no_grad():
        for group, saved in zip(optimizer.param_groups, state["param_groups"], strict=True):
            group.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
            for p in group["params"]:
                optimizer.state[p]["step"].fill_(state["optimizer_steps"][names[id(p)]])
    rng_file = path / f"rng-rank{_rank()}.safetensors"
    if rng_file.exists():  # another world size: ranks without a saved state keep their seeded one
        try:
            _load_rng(rng_file)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
            raise _unusable(path, f"{rng_file.name} cannot be read ({exc.__class__.__name__}: {exc})") from None
    return state


def _copy_full_into(dst: torch.Tensor, full: torch.Tensor) -> None:
    """Copy a full tensor into a plain tensor, or into this rank's shard of a DTensor."""
    if _is_dtensor(dst):
        from torch.distributed.tensor import distribute_tensor

        full = distribute_tensor(full.to(dst.device_mesh.device_type), dst.device_mesh, dst.placements)
    dst.copy_(full.to(dst.dtype))
