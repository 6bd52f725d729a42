"""The four math benchmarks as local JSON Lines: names, files, and where to find them.

The files live in ``../shared/data/benchmarks/`` next to the repository (see its README for fields and
provenance); ``$CRAWL2SCORE_BENCHMARKS_DIR`` or ``eval.benchmarks_dir`` points elsewhere. Online users can
load the same problems from the hub ids in :data:`HUB_IDS` (documented in docs/evaluation.md).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from crawl2score.errors import BadInput

REPO = Path(__file__).resolve().parent.parent
ENV_VAR = "CRAWL2SCORE_BENCHMARKS_DIR"

# Short name -> local file. The lm-eval tasks are `c2s_<name>_<protocol>`.
FILES = {
    "aime24": "aime2024.jsonl",
    "aime25": "aime2025.jsonl",
    "math500": "math500.jsonl",
    "cnmo24": "cnmo2024_en.jsonl",
}

# Public copies for users with hub access (not used by this project's offline runs).
HUB_IDS = {
    "aime24": "Maxwell-Jia/AIME_2024 (split train), also AI-MO/aimo-validation-aime (ids 60-89)",
    "aime25": "opencompass/AIME2025 (configs AIME2025-I, AIME2025-II), also yentinglin/aime_2025",
    "math500": "HuggingFaceH4/MATH-500 (split test)",
    "cnmo24": "opencompass/LiveMathBench (config v202412_CNMO_en, gated, cc-by-4.0)",
}

PROTOCOLS = ("chat", "base")
TASK_PREFIX = "c2s_"


def shared_data_dir() -> Path:
    """`$CRAWL2SCORE_SHARED_DIR/data`, else `<repo>/../shared/data` (read-only material beside the repo)."""
    shared = os.environ.get("CRAWL2SCORE_SHARED_DIR")
    return (Path(shared) if shared else REPO.parent / "shared") / "data"


def benchmarks_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """`override`, else $CRAWL2SCORE_BENCHMARKS_DIR, else `$CRAWL2SCORE_SHARED_DIR/data/benchmarks`, else
    `<repo>/../shared/data/benchmarks`."""
    if override:
        return Path(override)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return shared_data_dir() / "benchmarks"


def short_name(task: str) -> str:
    """`c2s_aime24_chat`, `aime24_chat`, `c2s_aime24` or `aime24` -> `aime24`."""
    name = task.removeprefix(TASK_PREFIX)
    for proto in PROTOCOLS:
        name = name.removesuffix(f"_{proto}")
    if name not in FILES:
        raise KeyError(f"unknown benchmark {task!r} (known: {', '.join(FILES)})")
    return name


def task_name(name: str, protocol: str) -> str:
    """The lm-eval task name for a benchmark and protocol: `c2s_aime24_chat`."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    return f"{TASK_PREFIX}{short_name(name)}_{protocol}"


def benchmark_path(name: str, directory: str | os.PathLike[str] | None = None) -> Path:
    return benchmarks_dir(directory) / FILES[short_name(name)]


REQUIRED_FIELDS = ("id", "problem", "answer")


class BenchmarkError(BadInput):
    """A benchmark file that is missing or not records with `id`, `problem` and `answer`; names file and line."""


@lru_cache(maxsize=16)
def _load(path: str) -> tuple[dict[str, Any], ...]:
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise BenchmarkError(f"{path}:{n}: not valid JSON ({exc})") from None
            missing = [k for k in REQUIRED_FIELDS if k not in record] if isinstance(record, dict) else None
            if missing is None or missing:
                what = f"lacks {', '.join(missing)}" if missing else "is not a JSON object"
                raise BenchmarkError(f"{path}:{n}: the record {what} (need {', '.join(REQUIRED_FIELDS)})")
            records.append(record)
    return tuple(records)


def load_benchmark(name: str, directory: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The benchmark's records (`id`, `problem`, `answer`, ...), in file order."""
    path = benchmark_path(name, directory)
    if not path.is_file():
        raise BenchmarkError(f"{path}: benchmark file not found (set ${ENV_VAR} or eval.benchmarks_dir)")
    return [dict(r) for r in _load(str(path.resolve()))]
