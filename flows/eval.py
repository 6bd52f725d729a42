"""The eval stage flow: WORKDIR/checkpoints/ → WORKDIR/eval/ (results.json, per-task sample files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from crawl2score.config import Config, apply_overrides
from crawl2score.flows._stage import StageInputMissing, run_stage
from crawl2score.tasks.eval import contamination_task, evaluate_checkpoint_task, write_results
from crawl2score.workdir import file_hash, read_marker, stage_dir, stale_input


def _checkpoints(config: Config) -> list[str]:
    if config.eval.checkpoints:
        return list(config.eval.checkpoints)
    return [str(Path(config.workdir) / "checkpoints")]  # the newest, through `latest`


def _input_keys(config: Config, checkpoints: list[str]) -> list[str]:
    """The train and tokenizer stage keys; explicit checkpoints add their weights' hashes."""
    from crawl2score.model.checkpoint import resolve_checkpoint

    keys = []
    for stage in ("tokenizer", "train"):
        marker = read_marker(config.workdir, stage)
        keys.append(str((marker or {}).get("key") or f"no-{stage}-marker"))
    for ckpt in checkpoints:
        step = resolve_checkpoint(ckpt)
        keys.append(f"{step.name}:{file_hash(step / 'model.safetensors')}")
    return keys


def _figures(results: dict[str, Any]) -> dict[str, Any]:
    """The newest checkpoint's headline figures, for the marker and report.md."""
    newest = results["checkpoints"][-1]
    figs: dict[str, Any] = {
        "checkpoint_step": newest["checkpoint"]["step"],
        "protocol": results["settings"]["protocol"],
    }
    for name, r in newest["results"].items():
        if name.startswith("_"):
            continue
        figs[name] = {k: r[k] for k in ("accuracy", "problems", "samples", "no_answer_rate", "hit_limit_rate")}
        figs[name]["ci95_low"], figs[name]["ci95_high"] = r["ci95"]
    for name, r in (newest["results"].get("_bpb") or {}).items():
        if "bits_per_byte" in r:
            keys = ("bits_per_byte", "unigram_bits_per_byte", "unigram_insample_bits_per_byte", "bytes")
            figs[f"bpb_{name}"] = {k: r[k] for k in keys}
            figs[f"bpb_{name}"]["learned"] = learning_verdict(
                r["bits_per_byte"], min(r["unigram_bits_per_byte"], r["unigram_insample_bits_per_byte"])
            )
    for name, c in (results.get("contamination") or {}).get("benchmarks", {}).items():
        figs.setdefault(name, {})["contaminated_share"] = c["share"]
    return figs


def learning_verdict(bpb: float, unigram: float) -> str:
    """One line for report.md: is the model below the best unigram model of the same text (the text's own
    token entropy, which no unigram model beats, when that is the lower of the two baselines)?"""
    ratio = bpb / unigram
    if ratio < 0.9:
        return f"yes: {bpb:.3f} bits/byte is {1 - ratio:.0%} below the unigram baseline {unigram:.3f}"
    if ratio < 1.0:
        return f"barely: {bpb:.3f} bits/byte vs unigram baseline {unigram:.3f}"
    return f"no: {bpb:.3f} bits/byte is not below the unigram baseline {unigram:.3f}"


@flow(name="eval")
def eval_flow(config: Config, force: bool = False, overrides: list[str] | None = None) -> dict[str, Any]:
    """Evaluate the newest checkpoint (or `eval.checkpoints`) unless WORKDIR/eval is current."""
    config = apply_overrides(config, overrides)  # `--set`-style keys over the deployed config
    problem = stale_input(config, "eval")  # checkpoints trained with other settings than this config's
    if problem:
        raise StageInputMissing(problem)
    from crawl2score.benchmarks import benchmarks_dir
    from crawl2score.eval.lineage import run_lineage

    checkpoints = _checkpoints(config)
    input_keys = _input_keys(config, checkpoints)
    section = config.section_dict("eval")
    out = stage_dir(config.workdir, "eval")
    tokenizer = Path(config.eval.tokenizer or Path(config.workdir) / "tokenizer")
    heldout = Path(config.workdir) / "tokenizer" / "heldout"  # the same bytes whichever tokenizer scores them

    def body(key: str) -> dict[str, Any]:
        runs = []
        for ckpt in checkpoints:
            from crawl2score.model.checkpoint import resolve_checkpoint

            step = resolve_checkpoint(ckpt)
            runs.append(
                evaluate_checkpoint_task(config.eval, str(step), str(tokenizer), str(out / step.name), str(heldout))
            )
        contamination = None
        if config.eval.contamination:
            contamination = contamination_task(
                str(Path(config.workdir) / "data" / "output"),
                config.eval.benchmarks,
                str(benchmarks_dir(config.eval.benchmarks_dir)),
                config.eval.contamination_ngram,
            )
        results = {
            "stage_key": key,
            "settings": section,
            "seeds": {
                "lm_eval": config.eval.seed,
                "sampling": f"sha256(seed, copy index, context) from {config.eval.seed}",
            },
            "benchmarks_dir": str(benchmarks_dir(config.eval.benchmarks_dir)),
            "lineage": run_lineage(config.workdir, tokenizer, config.section_dict("data")),
            "checkpoints": runs,
            "contamination": contamination,
        }
        write_results(str(out), results)
        return _figures(results)

    return run_stage("eval", config, input_keys, body, force=force)


if __name__ == "__main__":
    eval_flow(Config())
