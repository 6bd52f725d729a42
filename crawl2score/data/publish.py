"""Stats and publishing: per-step counters summed over tasks into stats.json, then output/ moved into place.

`output/` and `removed/` are renamed into WORKDIR/data/ only at the end, and `stats.json` last, so a
half-written output never looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from crawl2score.config.data import DataConfig
from crawl2score.data.recipe import DECONTAMINATE, REMOVED_STEPS, StagePaths, active_steps
from crawl2score.workdir import atomic_write_json


def read_step_stats(logs: Path, stage: str) -> list[dict[str, Any]]:
    """Per-step counters of one datatrove stage, summed over its tasks' `stats/<rank>.json`."""
    merged: list[dict[str, Any]] = []
    for path in sorted((logs / stage / "stats").glob("*.json")):
        for i, step in enumerate(json.loads(path.read_text())):
            if i >= len(merged):
                merged.append({"name": step["name"], "stats": {}})
            for key, value in step["stats"].items():
                total = value.get("total", 0) if isinstance(value, dict) else value
                merged[i]["stats"][key] = merged[i]["stats"].get(key, 0) + total
    return merged


def collect_stats(paths: StagePaths, cfg: DataConfig, inputs: list[str], seconds: float) -> dict[str, Any]:
    """stats.json: docs and bytes in/out per step and language, skipped input, duplicate clusters."""
    steps = (
        read_step_stats(paths.logs, "filter")
        + read_step_stats(paths.logs, "exact")
        + read_step_stats(paths.logs, "minhash")
    )
    tallies = {s["name"].split("tally:", 1)[1]: s["stats"] for s in steps if "tally:" in s["name"]}
    reader = next((s["stats"] for s in steps if "WARC stream" in s["name"]), {})
    drops: dict[str, dict[str, int]] = {}
    for s in steps:
        reasons = {k.removeprefix("dropped_"): v for k, v in s["stats"].items() if k.startswith("dropped_")}
        if reasons:
            drops[s["name"]] = reasons
    per_step = []
    prev: dict[str, Any] | None = None
    for step in active_steps(cfg):
        t = tallies.get(step, {})
        langs = sorted({k.removeprefix("docs_") for k in t if k.startswith("docs_")})
        row: dict[str, Any] = {
            "step": step,
            "docs_in": prev.get("docs", 0) if prev is not None else reader.get("records", 0),
            "docs_out": t.get("docs", 0),
            "bytes_in": prev.get("bytes", 0) if prev is not None else reader.get("input_bytes", 0),
            "bytes_out": t.get("bytes", 0),
            "by_language": {
                lang: {"docs": t.get(f"docs_{lang}", 0), "bytes": t.get(f"bytes_{lang}", 0)} for lang in langs
            },
        }
        per_step.append(row)
        prev = t
    final = tallies.get("minhash_dedup", {})
    by_step = {row["step"]: row for row in per_step}
    n_read = tallies.get("read", {}).get("docs", 0)
    return {
        "inputs": {"files": len(inputs), "paths": inputs[:20], "more": max(len(inputs) - 20, 0)},
        "input": {
            "records": reader.get("records", 0),
            "documents": n_read,
            "bytes": reader.get("input_bytes", 0),
            "skipped_huge": reader.get("skipped_huge", 0),
            "skipped_non_html": reader.get("skipped_non_html", 0),
            "skipped_undecodable": reader.get("skipped_undecodable", 0),
            "skipped_malformed": reader.get("skipped_malformed", 0),
            "corrupt_files": reader.get("corrupt_files", 0),
        },
        "steps": per_step,
        "drop_reasons": drops,
        "dedup": {
            "exact_removed": by_step["exact_dedup"]["docs_in"] - by_step["exact_dedup"]["docs_out"],
            "exact_clusters": final.get("exact_clusters", 0),
            "near_removed": by_step["minhash_dedup"]["docs_in"] - by_step["minhash_dedup"]["docs_out"],
            "near_clusters": final.get("near_clusters", 0),
        },
        "output": {
            "documents": final.get("docs", 0),
            "bytes": final.get("bytes", 0),
            "by_language": by_step["minhash_dedup"]["by_language"],
        },
        "seconds": round(seconds, 3),
        "docs_per_s_per_core": round(n_read / max(seconds, 1e-9) / max(_cores(cfg), 1), 2),
    }


def _cores(cfg: DataConfig) -> int:
    ex = cfg.executor
    if ex.kind == "local":
        return min(ex.workers, ex.tasks, os.cpu_count() or 1)
    return ex.tasks * ex.cpus_per_task


def summary_figures(stats: dict[str, Any]) -> dict[str, Any]:
    """The flat figures for the run report and the Prefect table."""
    out = {
        "input_files": stats["inputs"]["files"],
        "pages_read": stats["input"]["documents"],
        "skipped_huge": stats["input"]["skipped_huge"],
        "skipped_non_html": stats["input"]["skipped_non_html"],
        "corrupt_files": stats["input"]["corrupt_files"],
    }
    for row in stats["steps"]:
        out[f"docs_after_{row['step']}"] = row["docs_out"]
    out.update(stats["dedup"])
    out["output_documents"] = stats["output"]["documents"]
    out["output_bytes"] = stats["output"]["bytes"]
    for lang, v in stats["output"]["by_language"].items():
        out[f"output_docs_{lang}"] = v["docs"]
    out["seconds"] = stats["seconds"]
    out["docs_per_s_per_core"] = stats["docs_per_s_per_core"]
    return out


def publish(paths: StagePaths, stats: dict[str, Any]) -> None:
    """Move output/ and removed/ into WORKDIR/data/, then stats.json, then drop the work dir.

    Each rename is atomic; the stage marker written after this (flows/_stage.py) is what says complete.
    """
    from crawl2score.workdir import atomic_dir

    root = paths.root
    (root / "stats.json").unlink(missing_ok=True)
    for name, src in (("output", paths.output), ("removed", paths.removed)):
        with atomic_dir(root / name) as tmp:
            if src.exists():
                for child in src.iterdir():
                    os.replace(child, tmp / child.name)
    optional = tuple(row["step"] for row in stats.get("steps", []) if row["step"] == DECONTAMINATE)
    for step in (*REMOVED_STEPS, *optional):
        (root / "removed" / step).mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    os.replace(paths.logs, logs)
    atomic_write_json(root / "stats.json", stats)
    shutil.rmtree(paths.work, ignore_errors=True)
