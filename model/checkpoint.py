"""Weights-only checkpoints: model.safetensors + config.json (ModelArgs) per step directory.

safetensors holds tensors only, so loading never unpickles anything. Writes go to a temporary directory
first and are moved into place by rename, so a crash never leaves a half-written step visible; the
trainer names the newest complete step in `checkpoints/latest` (see `mark_latest`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from crawl2score.errors import BadInput
from crawl2score.model.config import ModelArgs
from crawl2score.model.model import Transformer

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
LATEST = "latest"


class CheckpointReadError(BadInput):
    """A step dir whose files cannot give a model: damaged after they were written (the writer's rename
    makes a half-written one impossible), or another model's. One line naming the file; not retried."""


def read_weights(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, or a CheckpointReadError naming it (safetensors' own errors do not)."""
    try:
        return load_file(str(path), device=str(device))
    except (OSError, SafetensorError) as exc:
        raise CheckpointReadError(f"{path}: cannot be read ({exc})") from None


def tensors_problem(want: dict[str, tuple[int, ...]], have: dict[str, tuple[int, ...]]) -> str | None:
    """What keeps tensors of shapes `have` from filling a model wanting `want`: a missing tensor or another
    shape, said in a few words; None when nothing does."""
    missing = sorted(set(want) - set(have))
    if missing:
        return f"lacks {len(missing)} of this model's tensors ({', '.join(missing[:3])})"
    for key, shape in want.items():
        if tuple(have[key]) != tuple(shape):
            return f"{key} has shape {list(have[key])}, this model's is {list(shape)}"
    return None


def _unwrap(model: nn.Module) -> nn.Module:
    while True:  # torch.compile and DDP wrappers
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        else:
            return model


def model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full, contiguous CPU tensors (DTensor shards gathered); persistent buffers such as the expert bias
    are included, per-step token counts are not."""
    out = {}
    for k, v in _unwrap(model).state_dict().items():
        if hasattr(v, "full_tensor"):
            v = v.full_tensor()
        out[k] = v.detach().to("cpu").contiguous()
    return out


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: set it straight back
    os.umask(mask)
    return mask


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """safetensors' `save_file` with the mode `open` would give (0666 less the umask): safetensors writes
    owner-only files, which a worker, server or trainer running as another user cannot read."""
    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, 0o666 & ~_umask())


def save_model(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write model.safetensors and config.json into `path` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args: ModelArgs = _unwrap(model).args
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdir's mode, not mkdtemp's 0700
        save_tensors(model_state_dict(model), tmp / WEIGHTS, metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(args.to_dict(), indent=2) + "\n")
        if not path.exists():
            os.rename(tmp, path)
        else:  # a step dir that already holds other files (train state): replace ours file by file
            for name in (WEIGHTS, CONFIG):
                os.replace(tmp / name, path / name)
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def mark_latest(step_dir: str | os.PathLike) -> None:
    """Atomically point `<parent>/latest` at step_dir (its name)."""
    step_dir = Path(step_dir)
    tmp = step_dir.parent / f".{LATEST}.tmp-{os.getpid()}"
    tmp.write_text(step_dir.name + "\n")
    os.replace(tmp, step_dir.parent / LATEST)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A step dir as is; a `checkpoints/` dir through its `latest` file."""
    path = Path(path)
    if (path / WEIGHTS).exists():
        return path
    if (path / LATEST).exists():
        step = path / (path / LATEST).read_text().strip()
        if (step / WEIGHTS).exists():
            return step
        raise FileNotFoundError(f"{path / LATEST} names {step}, which has no {WEIGHTS}")
    raise FileNotFoundError(f"{path} holds neither {WEIGHTS} nor a '{LATEST}' file")


def load_args(path: str | os.PathLike) -> ModelArgs:
    """The ModelArgs in a checkpoint's config.json, or a CheckpointReadError naming the file."""
    config = resolve_checkpoint(path) / CONFIG
    try:
        return ModelArgs.from_dict(json.loads(config.read_text()))
    except (OSError, ValueError, TypeError, AttributeError) as exc:  # BadInput is a ValueError too
        raise CheckpointReadError(f"{config}: not a model config ({exc.__class__.__name__}: {exc})") from None


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Transformer:
    """Build the model from config.json, load the weights (strict), return it in eval mode.

    Built on the meta device first, so nothing is initialised twice; `dtype` casts the parameters
    (default: fp32 masters).
    """
    step = resolve_checkpoint(path)
    args = load_args(step)
    with torch.device("meta"):
        model = Transformer(args)
    model.to_empty(device=device)
    state = read_weights(step / WEIGHTS, device)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problem = tensors_problem(want, {k: tuple(v.shape) for k, v in state.items()})
    extra = sorted(set(state) - set(want))
    if extra:
        problem = problem or f"holds {len(extra)} tensors this model lacks ({', '.join(extra[:3])})"
    if problem:
        raise CheckpointReadError(f"{step / WEIGHTS}: {problem}")
    model.load_state_dict(state, strict=True)
    model.reset_buffers()
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def check_tokenizer_dir(path: str | os.PathLike[str], setting: str = "eval.tokenizer") -> Path:
    """`path` if it is a tokenizer folder (tokenizer.json or tokenizer_config.json), else a one-line
    CheckpointReadError naming it and the setting that picks it: transformers, given a missing folder,
    takes it for a hub repo id and says only that the id is malformed."""
    path = Path(path)
    if not ((path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()):
        what = "no such folder" if not path.exists() else "no tokenizer.json or tokenizer_config.json in it"
        raise CheckpointReadError(f"{path}: {what} (the checkpoint's tokenizer folder; set {setting})")
    return path


def default_tokenizer_dir(checkpoint: str | os.PathLike[str]) -> Path:
    """WORKDIR/tokenizer for WORKDIR/checkpoints or WORKDIR/checkpoints/step-N: where the pipeline put the
    tokenizer the checkpoint was trained with (evaluation and HF export both look here by default)."""
    path = Path(checkpoint).resolve()
    for parent in (path, *path.parents):
        if parent.name == "checkpoints":
            return parent.parent / "tokenizer"
    return path.parent.parent / "tokenizer"
