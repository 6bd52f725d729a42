"""What produced a score: checkpoint, tokenizer, token shards, data stage, settings, software versions."""

from __future__ import annotations

import hashlib
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from crawl2score.workdir import STAGES, file_hash, read_marker, stable_hash


def _maybe_hash(path: Path) -> str | None:
    return file_hash(path) if path.is_file() else None


def tree_hash(path: Path) -> str | None:
    """sha256 over the relative names and contents of every file under `path` (None if absent)."""
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(f.relative_to(path)).encode() + b"\0" + file_hash(f, 64).encode())
    return h.hexdigest()[:16]


def checkpoint_lineage(step_dir: Path) -> dict[str, Any]:
    m = re.search(r"(\d+)$", step_dir.name)
    return {
        "path": str(step_dir),
        "step": int(m.group(1)) if m else None,
        "weights_sha256": _maybe_hash(step_dir / "model.safetensors"),
        "config_sha256": _maybe_hash(step_dir / "config.json"),
    }


def _versions() -> dict[str, str | None]:
    out = {}
    for pkg in ("lm_eval", "math-verify", "torch", "transformers", "tokenizers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def run_lineage(workdir: str | Path, tokenizer_dir: Path, data_section: dict[str, Any] | None) -> dict[str, Any]:
    """Hashes of every input of the evaluation that lives in WORKDIR, plus each stage's recorded key."""
    workdir = Path(workdir)
    markers = {s: (read_marker(workdir, s) or {}).get("key") for s in STAGES if s != "eval"}
    return {
        "tokenizer_sha256": _maybe_hash(tokenizer_dir / "tokenizer.json"),
        "tokens_manifest_sha256": _maybe_hash(workdir / "tokens" / "manifest.json"),
        "data_config_hash": stable_hash(data_section) if data_section is not None else None,
        "data_output_hash": tree_hash(workdir / "data" / "output"),
        "stage_keys": markers,
        "versions": _versions(),
    }
