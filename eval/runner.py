"""One evaluation: a checkpoint through lm-eval on the configured benchmarks, rescored per problem.

lm-eval computes its own `pass_at_1` (via `eval/tasks/utils.py`); the samples it logs are then rescored
with the same checker into per-problem records (prompt, samples, extracted answers, verdicts, whether each
sample hit the token limit), which give the honest statistics of `eval.scoring.summarize`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crawl2score.benchmarks import benchmarks_dir, short_name, task_name
from crawl2score.config.eval import EvalConfig
from crawl2score.eval.scoring import ProblemRecord, score_problem, summarize

YAML_DIR = Path(__file__).resolve().parent / "yaml"


def task_settings(cfg: EvalConfig, task) -> dict[str, Any]:
    """Apply the config to one lm-eval task (samples, sampling, token cap) and return what it runs with."""
    gen = dict(task.config.generation_kwargs or {})
    sampled = bool(gen.get("do_sample"))
    if sampled:
        gen.update(temperature=cfg.temperature, top_p=cfg.top_p)
        task.set_config("repeats", cfg.num_samples)
    gen["max_gen_toks"] = min(int(gen.get("max_gen_toks", cfg.max_new_tokens)), cfg.max_new_tokens)
    task.set_config("generation_kwargs", gen)
    return {
        "repeats": task.config.repeats,
        "num_fewshot": task.config.num_fewshot,
        "generation_kwargs": gen,
        "version": (task.config.metadata or {}).get("version"),
    }


def evaluate_checkpoint(
    cfg: EvalConfig,
    checkpoint: str | Path,
    *,
    tokenizer: str | Path | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run lm-eval on `checkpoint`; write `<out_dir>/<task>.samples.jsonl`; return figures per task."""
    import lm_eval
    from lm_eval.tasks import TaskManager, get_task_dict

    from crawl2score.eval.lm import Crawl2ScoreLM

    bench_dir = str(benchmarks_dir(cfg.benchmarks_dir))
    lm = Crawl2ScoreLM(
        checkpoint=str(checkpoint),
        tokenizer=str(tokenizer) if tokenizer else None,
        device=cfg.device,
        batch_size=cfg.batch_size,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
        dtype=cfg.dtype,
        speculative=cfg.speculative,
    )
    names = [task_name(t, cfg.protocol) for t in cfg.tasks]
    manager = TaskManager(include_path=str(YAML_DIR), include_defaults=False, metadata={"benchmarks_dir": bench_dir})
    task_dict = get_task_dict(names, manager)
    settings = {name: task_settings(cfg, task_dict[name]) for name in names}
    res = lm_eval.simple_evaluate(
        model=lm,
        tasks=[task_dict[n] for n in names],
        limit=cfg.limit,
        task_manager=manager,  # else lm-eval indexes its ~14k built-in YAMLs (about 25 s) again
        log_samples=True,
        random_seed=cfg.seed,
        numpy_random_seed=cfg.seed,
        torch_random_seed=cfg.seed,
        fewshot_random_seed=cfg.seed,
    )
    out: dict[str, Any] = {}
    for name in names:
        records = [_record(lm, s, cfg.score_timeout_s) for s in res["samples"][name]]
        lm_eval_metrics = {k: v for k, v in res["results"][name].items() if isinstance(v, (int, float))}
        out[short_name(name)] = {
            "task": name,
            **summarize(records),
            "lm_eval": lm_eval_metrics,
            "settings": settings[name],
        }
        if out_dir is not None:
            path = Path(out_dir) / f"{short_name(name)}.samples.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                for r in records:
                    f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
            out[short_name(name)]["samples_file"] = path.name
    if lm.spec_stats:
        out["_speculative"] = dict(lm.spec_stats)
    return out


def _record(lm, sample: dict[str, Any], timeout_s: float) -> ProblemRecord:
    doc = sample["doc"]
    context = sample["arguments"][0][0] if sample["arguments"] else ""
    outputs = sample["filtered_resps"]
    outputs = outputs[0] if outputs and isinstance(outputs[0], list) else outputs
    outputs = [str(o) for o in outputs]
    # finish reasons are logged per (context, text); identical texts pop in order
    reasons = {k: list(v) for k, v in lm.finish_reasons.items() if k[0] == context}
    hit_limit = []
    for o in outputs:
        queue = reasons.get((context, o)) or []
        hit_limit.append(queue.pop(0) == "length" if queue else None)
    return score_problem(doc["id"], doc["answer"], outputs, prompt=context, hit_limit=hit_limit, timeout_s=timeout_s)
