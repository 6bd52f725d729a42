"""Evaluation figures: anchored scoring, request lengths at each preset, bits per byte, chat stops.

    python benchmarks/eval_protocol.py --workdir work [--json out.json]

1. Echo and gold self-check over all 578 problems of the four benchmarks, at both anchors: the problem
   sent back as the answer (expected 0) and the gold answer stated at the anchor (expected 1). Baseline in
   the same run: the previous extraction (math-verify over the whole output, any expression).
2. Request lengths at the small, medium and DeepSeek-V3 shapes (meta-device models, the workdir's
   tokenizer) for the first 5 problems of each benchmark in both protocols: prompt tokens and new-token
   budgets, against the previous rule (budget min(requested, context - 1), prompt cut to context - budget).
3. Bits per byte of the workdir's newest checkpoint and of a random-init model of the same shape on the
   same bytes, with the unigram baseline.
4. Seconds per problem for the chat protocol on the newest checkpoint: the bare prompt with EOS as the
   only stop (before) against the tokenizer's chat template with EOS and next-turn stops (after).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crawl2score.benchmarks import FILES, load_benchmark  # noqa: E402
from crawl2score.config import load_config  # noqa: E402
from crawl2score.config.eval import EvalConfig  # noqa: E402
from crawl2score.eval.decoding import Generation  # noqa: E402
from crawl2score.eval.lm import Crawl2ScoreLM  # noqa: E402
from crawl2score.eval.runner import evaluate_bpb, evaluate_lm, make_lm  # noqa: E402
from crawl2score.eval.scoring import score_predictions  # noqa: E402
from crawl2score.eval.yaml.utils import chat_prompt, minerva_prompt  # noqa: E402

MINERVA = "Final Answer: The final answer is ${}$. I hope it is correct."


def _old_check(gold: str, output: str) -> bool:
    """The previous checker: any expression anywhere in the output (math-verify's own extraction)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    from crawl2score.eval.scoring import _parse_gold

    try:
        pred = parse(output, [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()])
        return bool(pred) and bool(verify(_parse_gold(gold), pred))
    except Exception:  # noqa: BLE001
        return False


def anchored_scoring() -> dict:
    out = {}
    for name in sorted(FILES):
        docs = load_benchmark(name)
        row = {"problems": len(docs)}
        for protocol, prompt, form in (("chat", chat_prompt, "\\boxed{{{}}}"), ("base", minerva_prompt, MINERVA)):
            echo, _ = score_predictions(name, [{"id": d["id"], "output": prompt(d)} for d in docs], protocol=protocol)
            gold, _ = score_predictions(
                name, [{"id": d["id"], "output": form.format(d["answer"])} for d in docs], protocol=protocol
            )
            row[f"echo_{protocol}"] = echo["accuracy"]
            row[f"gold_{protocol}"] = gold["accuracy"]
        row["echo_previous_checker"] = sum(_old_check(d["answer"], d["problem"]) for d in docs) / len(docs)
        out[name] = row
        print(name, row, flush=True)
    return out


class _PlanOnly(Crawl2ScoreLM):
    def _generate(self, prompts, max_new, temperature, top_p, seeds, stop):
        return [Generation([self.eot_token_id], "eos") for _ in prompts]


def request_lengths(tokenizer_dir: Path) -> dict:
    from transformers import AutoTokenizer

    from crawl2score.model import Transformer, get_preset

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    out = {}
    for config, preset in (("small", "small"), ("medium", "medium"), ("medium", "deepseek-v3")):
        with torch.device("meta"):
            model = Transformer(get_preset(preset))
        base_cfg = load_config(config).eval
        for protocol in ("base", "chat"):
            cfg = base_cfg.model_copy(
                update={"protocol": protocol, "bpb": [], "limit": 5, "num_samples": 1, "device": "cpu"}
            )
            lm = _PlanOnly(model=model, tokenizer=tok, max_new_tokens=cfg.max_new_tokens)
            res = evaluate_lm(cfg, lm)
            reqs = [res[b]["requests"] for b in cfg.benchmarks]
            L, asked = lm.max_length, cfg.max_new_tokens
            old_budget = max(1, min(asked, L - 1))
            row = {
                "context": L,
                "requested_new_tokens": asked,
                "prompt_tokens_max": max(r["prompt_tokens_max"] for r in reqs),
                "new_token_budget_min": min(r["new_token_budget_min"] for r in reqs),
                "prompts_truncated": sum(r["prompts_truncated"] for r in reqs),
                "previous_prompt_tokens_kept": L - old_budget,
            }
            out[f"{preset}/{protocol}"] = row
            print(preset, protocol, row, flush=True)
    return out


def bpb_trained_vs_random(workdir: Path, cfg: EvalConfig) -> dict:
    from crawl2score.model import Transformer, save_model
    from crawl2score.model.checkpoint import resolve_checkpoint

    tokenizer = workdir / "tokenizer"
    trained = make_lm(cfg, workdir / "checkpoints", tokenizer)
    out = {"trained": evaluate_bpb(cfg, trained)}
    torch.manual_seed(0)
    random_model = Transformer(trained.model.args)
    with tempfile.TemporaryDirectory() as tmp:
        save_model(random_model, Path(tmp) / "step-0")
        out["random_init"] = evaluate_bpb(cfg, make_lm(cfg, Path(tmp) / "step-0", tokenizer))
    out["checkpoint"] = resolve_checkpoint(workdir / "checkpoints").name
    for which in ("trained", "random_init"):
        print(which, json.dumps(out[which]), flush=True)
    return out


def chat_seconds(workdir: Path, problems: int, new_tokens: int) -> dict:
    cfg = EvalConfig(
        benchmarks=["aime24"],
        bpb=[],
        protocol="chat",
        limit=problems,
        num_samples=1,
        max_new_tokens=new_tokens,
        truncate_prompts=True,
        batch_size=1,
    )
    out = {}
    for label, template in (("before", False), ("after", True)):
        lm = make_lm(cfg, workdir / "checkpoints", workdir / "tokenizer")
        if not template:
            lm.tokenizer.chat_template = None  # bare prompt, EOS the only stop: the previous chat protocol
        start = time.perf_counter()
        res = evaluate_lm(cfg, lm)["aime24"]
        seconds = time.perf_counter() - start
        finishes = [g["finish"] for g in lm.generation_log]
        out[label] = {
            "seconds_per_problem": seconds / problems,
            "new_tokens_mean": sum(g["new_tokens"] for g in lm.generation_log) / len(lm.generation_log),
            "stopped_early": sum(f != "length" for f in finishes) / len(finishes),
            "no_answer_rate": res["no_answer_rate"],
        }
        print(label, out[label], flush=True)
    out["ratio_before_over_after"] = out["before"]["seconds_per_problem"] / out["after"]["seconds_per_problem"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="work", help="a finished `crawl2score run` WORKDIR")
    ap.add_argument("--bpb-bytes", type=int, default=50_000)
    ap.add_argument("--chat-problems", type=int, default=5)
    ap.add_argument("--chat-new-tokens", type=int, default=256)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: scoring,requests,bpb,chat")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    workdir = Path(args.workdir)
    skip = set(filter(None, args.skip.split(",")))
    results: dict = {"torch_threads": torch.get_num_threads()}
    if "scoring" not in skip:
        results["anchored_scoring"] = anchored_scoring()
    if "requests" not in skip:
        results["request_lengths"] = request_lengths(workdir / "tokenizer")
    if "bpb" not in skip:
        results["bpb"] = bpb_trained_vs_random(workdir, EvalConfig(bpb_max_bytes=args.bpb_bytes))
    if "chat" not in skip:
        results["chat_seconds"] = chat_seconds(workdir, args.chat_problems, args.chat_new_tokens)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
