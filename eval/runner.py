"""One evaluation: a checkpoint through lm-eval on the configured benchmarks, rescored per problem.

lm-eval computes its own `pass_at_1` (via `eval/yaml/utils.py`); the samples it logs are then rescored
with the same checker into per-problem records (prompt, samples, anchored answers, verdicts, timeouts,
whether each sample hit the token limit), which give the statistics of `eval.scoring.summarize`. Each
task also reports the token budgets its requests ran with (`requests`), and bits per byte on held-out
and public text (`eval.bpb`) sits beside the math scores, with the unigram baseline of the same text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crawl2score.benchmarks import benchmarks_dir, short_name, task_name
from crawl2score.config.eval import EvalConfig
from crawl2score.eval import bpb as bpb_texts
from crawl2score.eval.scoring import ProblemRecord, score_problem, summarize

YAML_DIR = Path(__file__).resolve().parent / "yaml"
log = logging.getLogger("crawl2score.eval")


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


def make_lm(cfg: EvalConfig, checkpoint: str | Path, tokenizer: str | Path | None = None):
    from crawl2score.eval.lm import Crawl2ScoreLM

    return Crawl2ScoreLM(
        checkpoint=str(checkpoint),
        tokenizer=str(tokenizer) if tokenizer else None,
        device=cfg.device,
        batch_size=cfg.batch_size,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
        dtype=cfg.dtype,
        speculative=cfg.speculative,
        truncate_prompts=cfg.truncate_prompts,
    )


def evaluate_checkpoint(
    cfg: EvalConfig,
    checkpoint: str | Path,
    *,
    tokenizer: str | Path | None = None,
    out_dir: str | Path | None = None,
    heldout_dir: str | Path | None = None,
    on_generated: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run lm-eval on `checkpoint`; write `<out_dir>/<benchmark>.samples.jsonl`; return figures per benchmark.

    `on_generated(done, total)`: called as generation requests finish (a progress bar's feed).

    `heldout_dir`: the tokenizer stage's held-out texts (default: `heldout/` in the checkpoint's tokenizer
    dir); an imported model with its own tokenizer is scored on the same bytes through it.
    """
    lm = make_lm(cfg, checkpoint, tokenizer)
    lm.on_generated = on_generated
    return evaluate_lm(cfg, lm, out_dir=out_dir, heldout_dir=heldout_dir)


def _heldout_dir(lm, heldout_dir: str | Path | None) -> Path:
    return Path(heldout_dir) if heldout_dir else Path(lm.tokenizer_dir) / "heldout"


def _manager(cfg: EvalConfig, lm, heldout_dir: str | Path | None = None):
    from lm_eval.tasks import TaskManager

    metadata = {
        "benchmarks_dir": str(benchmarks_dir(cfg.benchmarks_dir)),
        "heldout_dir": str(_heldout_dir(lm, heldout_dir)),
        "bpb_max_bytes": cfg.bpb_max_bytes,
    }
    return TaskManager(include_path=str(YAML_DIR), include_defaults=False, metadata=metadata)


def _simple_evaluate(cfg: EvalConfig, lm, manager, tasks: list, **kwargs: Any) -> dict[str, Any]:
    import lm_eval

    return lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=manager,  # else lm-eval indexes its ~14k built-in YAMLs (about 25 s) again
        random_seed=cfg.seed,
        numpy_random_seed=cfg.seed,
        torch_random_seed=cfg.seed,
        fewshot_random_seed=cfg.seed,
        **kwargs,
    )


def evaluate_lm(
    cfg: EvalConfig, lm, *, out_dir: str | Path | None = None, heldout_dir: str | Path | None = None
) -> dict[str, Any]:
    """The math benchmarks (cfg.protocol) and the BPB texts on one lm-eval model."""
    out: dict[str, Any] = {}
    manager = _manager(cfg, lm, heldout_dir)
    if cfg.benchmarks:
        out.update(_math(cfg, lm, manager, out_dir))
    if cfg.bpb:
        out["_bpb"] = evaluate_bpb(cfg, lm, manager, heldout_dir)
    if lm.spec_stats:
        out["_speculative"] = dict(lm.spec_stats)
    return out


def _math(cfg: EvalConfig, lm, manager, out_dir: str | Path | None) -> dict[str, Any]:
    from lm_eval.tasks import get_task_dict

    names = [task_name(t, cfg.protocol) for t in cfg.benchmarks]
    task_dict = get_task_dict(names, manager)
    settings = {name: task_settings(cfg, task_dict[name]) for name in names}
    # Chat models answer inside their own conversation format; a tokenizer without a template gets the
    # bare prompt (recorded, so such a score is never mistaken for the protocol's).
    chat = cfg.protocol == "chat" and bool(lm.chat_template_text)
    if cfg.protocol == "chat" and not chat:
        log.warning("chat protocol: %s has no chat template; prompts go in bare", lm.tokenizer_dir)
    start = len(lm.generation_log)
    res = _simple_evaluate(
        cfg, lm, manager, [task_dict[n] for n in names], limit=cfg.limit, log_samples=True, apply_chat_template=chat
    )
    requests = lm.generation_log[start:]
    out: dict[str, Any] = {}
    for name in names:
        records = [_record(lm, s, cfg.score_timeout_s, cfg.protocol) for s in res["samples"][name]]
        lm_eval_metrics = {k: v for k, v in res["results"][name].items() if isinstance(v, (int, float))}
        out[short_name(name)] = {
            "lm_eval_task": name,
            **summarize(records),
            "requests": request_stats([r for r in requests if r.get("task") == name]),
            "lm_eval": lm_eval_metrics,
            "settings": {**settings[name], "chat_template": chat},
        }
        if out_dir is not None:
            path = Path(out_dir) / f"{short_name(name)}.samples.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                for r in records:
                    f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
            out[short_name(name)]["samples_file"] = path.name
    return out


def request_stats(log: list[dict[str, Any]]) -> dict[str, Any]:
    """The token budgets the requests ran with: prompt lengths, new-token budgets, cuts (all counted)."""
    if not log:
        return {"requests": 0}
    return {
        "requests": len(log),
        "context": log[0].get("context"),
        "prompt_tokens_max": max(r["prompt_tokens"] for r in log),
        "requested_new_tokens": max(r["requested_new_tokens"] for r in log),
        "new_token_budget_min": min(r["max_new_tokens"] for r in log),
        "new_token_budget_max": max(r["max_new_tokens"] for r in log),
        "budget_reduced": sum(r["max_new_tokens"] < r["requested_new_tokens"] for r in log),
        "prompts_truncated": sum(bool(r["context_truncated"]) for r in log),
    }


def evaluate_bpb(cfg: EvalConfig, lm, manager=None, heldout_dir: str | Path | None = None) -> dict[str, Any]:
    """Bits per byte per text through lm-eval, with the unigram baselines of the same tokens."""
    from lm_eval.tasks import get_task_dict

    heldout = _heldout_dir(lm, heldout_dir)
    manager = manager or _manager(cfg, lm, heldout)
    out: dict[str, Any] = {}
    names = []
    for source in cfg.bpb:
        why = bpb_texts.available(source, heldout)
        if why:
            out[source] = {"skipped": why}
        else:
            names.append(bpb_texts.task_name(source))
    if not names:
        return out
    task_dict = get_task_dict(names, manager)
    res = _simple_evaluate(cfg, lm, manager, [task_dict[n] for n in names])

    def encode(text: str) -> list[int]:
        return lm.tok_encode(text, add_special_tokens=False)

    tokens_dir = heldout.parent.parent / "tokens"  # WORKDIR/tokens beside WORKDIR/tokenizer/heldout
    for name in names:
        source = name.removeprefix(bpb_texts.TASK_PREFIX)
        texts = bpb_texts.load_texts(source, heldout, cfg.bpb_max_bytes)
        insample = bpb_texts.unigram_bpb(texts, encode)
        trained = bpb_texts.train_unigram_bpb(texts, encode, tokens_dir, lm.model.args.vocab_size)
        out[source] = {
            "bits_per_byte": res["results"][name].get("bits_per_byte,none"),
            "unigram_bits_per_byte": trained if trained is not None else insample,
            "unigram_from": "training shards" if trained is not None else "the text itself",
            "unigram_insample_bits_per_byte": insample,
            "docs": len(texts),
            "bytes": sum(len(t.encode("utf-8")) for t in texts),
            "tokens": sum(len(encode(t)) for t in texts),
        }
    return out


def _record(lm, sample: dict[str, Any], timeout_s: float, protocol: str) -> ProblemRecord:
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
    return score_problem(
        doc["id"], doc["answer"], outputs, prompt=context, hit_limit=hit_limit, timeout_s=timeout_s, protocol=protocol
    )
