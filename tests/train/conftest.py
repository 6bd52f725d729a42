"""Fixtures for the trainer tests: a small token directory and the trainer as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
VOCAB = 256
EOS = VOCAB - 1


def synthetic_documents(n_tokens: int, seed: int = 0) -> list[np.ndarray]:
    """Documents with learnable structure (arithmetic runs with noise) so the loss falls in a few steps."""
    rng = np.random.default_rng(seed)
    docs, total = [], 0
    while total < n_tokens:
        n = int(rng.integers(20, 120))
        start, stride = rng.integers(0, EOS), rng.integers(1, 9)
        doc = (start + stride * np.arange(n) + rng.integers(0, 2, n)) % EOS
        docs.append(doc.astype(np.uint32))
        total += n + 1
    return docs


def write_tokens(out: Path, n_tokens: int = 16000) -> Path:
    """WORKDIR/tokens/ in the layout `model.shards.TokenShards` reads (one shard, EOS after each doc)."""
    out.mkdir(parents=True, exist_ok=True)
    docs = [np.append(d, EOS).astype("<u4") for d in synthetic_documents(n_tokens)]
    flat = np.concatenate(docs)
    flat.tofile(out / "shard-00000.bin")
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype("<i8")
    offsets.tofile(out / "shard-00000.idx")
    manifest = {
        "dtype": "uint32",
        "vocab_size": VOCAB,
        "bos_id": EOS - 2,
        "eos_id": EOS,
        "pad_id": EOS - 1,
        "num_tokens": int(len(flat)),
        "num_docs": len(docs),
        "shards": [
            {"path": "shard-00000.bin", "index": "shard-00000.idx", "num_tokens": int(len(flat)), "num_docs": len(docs)}
        ],
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="session")
def tokens_dir(tmp_path_factory) -> Path:
    return write_tokens(tmp_path_factory.mktemp("tokens"))


def tiny_config(tokens: Path, **train) -> dict:
    """The tiny preset with a 256-token vocabulary and 32-token sequences: a step takes ~0.1 s."""
    cfg = {
        "model": {"preset": "tiny", "vocab_size": VOCAB, "max_seq_len": 64},
        "train": {
            "steps": 8,
            "seq_len": 32,
            "global_batch_size": 8,
            "micro_batch_size": 4,
            "warmup_steps": 2,
            "lr": 3e-3,
            "log_every": 1,
            "checkpoint_every": 4,
            "tokens_dir": str(tokens),
        },
    }
    cfg["train"].update(train)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg))
    return path


def trainer_cmd(config: Path, workdir: Path, nproc: int = 1) -> list[str]:
    """`python -m crawl2score.model.train` for one process, torchrun (standalone rendezvous, free port) for more."""
    launch = (
        [sys.executable]
        if nproc == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    )
    return launch + ["-m", "crawl2score.model.train", "--config", str(config), "--workdir", str(workdir)]


def run_trainer(
    config: Path, workdir: Path, nproc: int = 1, env: dict | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    import os

    full_env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(
        trainer_cmd(config, workdir, nproc), capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO
    )


def events(stdout: str, kind: str | None = None) -> list[dict]:
    out = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            if kind is None or d.get("event") == kind:
                out.append(d)
    return out
