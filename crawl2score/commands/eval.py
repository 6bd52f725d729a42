"""`eval` (the evaluation stage, or lm-eval's own command line after `--`) and `score` (any model's outputs)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from crawl2score.commands import CLIError, add_common_args, config_from_args, prepare_prefect


def register(subparsers: argparse._SubParsersAction) -> None:
    e = subparsers.add_parser(
        "eval",
        help="evaluate checkpoints with lm-eval (AIME 2024, MATH-500, CNMO 2024, bits per byte); `-- ARGS` runs lm-eval's CLI",
        description=(
            "Evaluate the newest checkpoint (or --checkpoint ...) and write WORKDIR/eval/results.json. "
            "Everything after `--` is handed to lm-eval's own command line with the `crawl2score` model "
            "registered and eval/yaml on the include path, e.g. "
            "`crawl2score eval -- --model crawl2score --model_args checkpoint=work/checkpoints "
            "--tasks c2s_math500_base --limit 5`."
        ),
    )
    add_common_args(e)
    e.add_argument("--benchmarks", default=None, help="comma-separated benchmarks: aime24, aime25, math500, cnmo24")
    # The old name, hidden: "tasks" now means Prefect tasks.
    e.add_argument("--tasks", dest="benchmarks", default=None, help=argparse.SUPPRESS)
    e.add_argument(
        "--protocol", choices=["chat", "base"], default=None, help="chat: zero-shot sampled; base: few-shot greedy"
    )
    e.add_argument("--limit", type=int, default=None, help="problems per task")
    e.add_argument("--checkpoint", action="append", default=None, help="checkpoint dir (repeatable); default newest")
    e.add_argument("--max-new-tokens", type=int, default=None, dest="max_new_tokens")
    e.add_argument("--num-samples", type=int, default=None, dest="num_samples", help="samples per problem (chat)")
    e.add_argument("--force", action="store_true", help="redo the stage even if its output is current")
    e.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="after `--`: lm-eval's own arguments")
    e.set_defaults(func=cmd_eval)

    s = subparsers.add_parser(
        "score",
        help="score a JSONL of model outputs ({id, output} per line) against a benchmark's gold answers",
    )
    s.add_argument("--benchmark", "--task", dest="benchmark", required=True, help="aime24, aime25, math500 or cnmo24")
    s.add_argument(
        "--predictions",
        required=True,
        help="JSONL: {'id': ..., 'output': '...'} per problem; several samples of one problem need a 'sample' number",
    )
    s.add_argument(
        "--protocol",
        choices=["chat", "base"],
        default="chat",
        help="where the answer is: chat = last \\boxed{} (default), base = Minerva 'Final Answer' line",
    )
    s.add_argument(
        "--allow-partial",
        action="store_true",
        dest="allow_partial",
        help="score problems without a prediction as wrong instead of refusing",
    )
    s.add_argument(
        "--details", default=None, help="write per-problem records (answers, verdicts, timeouts, errors) to this JSONL"
    )
    s.add_argument("--benchmarks-dir", default=None, help="default $CRAWL2SCORE_BENCHMARKS_DIR or ../shared/...")
    s.add_argument("--timeout", type=float, default=5.0, help="seconds per checked sample")
    s.set_defaults(func=cmd_score)


def _eval_overrides(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    if args.benchmarks:
        out.append(f"eval.benchmarks={json.dumps([t.strip() for t in args.benchmarks.split(',') if t.strip()])}")
    for key in ("protocol", "limit", "max_new_tokens", "num_samples"):
        value = getattr(args, key)
        if value is not None:
            out.append(f"eval.{key}={value}")
    if args.checkpoint:
        out.append(f"eval.checkpoints={json.dumps(args.checkpoint)}")
    return out


def cmd_eval(args: argparse.Namespace) -> int:
    extra = list(args.lm_eval_args or [])
    if extra[:1] == ["--"]:
        extra = extra[1:]
    if extra:
        from crawl2score.eval.cli import run_lm_eval_cli
        from crawl2score.eval.lm import PromptTooLong

        try:
            return run_lm_eval_cli(extra)
        except PromptTooLong as exc:  # the model's context is too short for the task: one line, as below
            raise CLIError(str(exc).replace(PromptTooLong.CONFIG_HINT, PromptTooLong.MODEL_ARGS_HINT)) from None
    args.overrides = [*args.overrides, *_eval_overrides(args)]
    cfg = config_from_args(args)
    from crawl2score.benchmarks import load_benchmark, short_name

    try:
        for t in cfg.eval.benchmarks:
            short_name(t)
    except KeyError as exc:
        raise CLIError(f"--benchmarks: {exc.args[0]}") from None
    from crawl2score.model.checkpoint import check_tokenizer_dir, load_args, resolve_checkpoint

    for ckpt in cfg.eval.checkpoints or [str(Path(cfg.workdir) / "checkpoints")]:
        try:  # fail fast, with one line, before Prefect starts
            resolve_checkpoint(ckpt)
        except FileNotFoundError as exc:
            raise CLIError(f"no checkpoint to evaluate: {exc} (run `crawl2score train` or pass --checkpoint)") from None
        load_args(ckpt)  # a config.json that is no model's: one line (CheckpointReadError) naming it
    check_tokenizer_dir(cfg.eval.tokenizer or Path(cfg.workdir) / "tokenizer")
    for t in cfg.eval.benchmarks:  # a missing or broken file: one line (BadInput) before Prefect starts
        load_benchmark(t, cfg.eval.benchmarks_dir)
    from crawl2score.workdir import stale_input

    problem = stale_input(cfg, "eval")  # the flow checks again, for deployment runs
    if problem:
        raise CLIError(problem)
    prepare_prefect(cfg)
    from crawl2score.flows.eval import eval_flow

    result = eval_flow(config=cfg, force=args.force)  # PromptTooLong is BadInput: one line
    print(json.dumps(result, indent=2, default=str))
    print(f"results: {Path(cfg.workdir).resolve() / 'eval' / 'results.json'}")
    return 0


def _read_jsonl(path: str) -> list[dict]:
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise CLIError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    except OSError as exc:
        raise CLIError(f"{path}: {exc.strerror or exc}") from None
    return rows


def cmd_score(args: argparse.Namespace) -> int:
    from crawl2score.benchmarks import short_name
    from crawl2score.eval.scoring import score_predictions

    try:
        short_name(args.benchmark)
    except KeyError as exc:
        raise CLIError(f"--benchmark: {exc.args[0]}") from None
    rows = _read_jsonl(args.predictions)
    try:
        summary, records = score_predictions(
            args.benchmark,
            rows,
            benchmarks_dir=args.benchmarks_dir,
            timeout_s=args.timeout,
            protocol=args.protocol,
            allow_partial=args.allow_partial,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(f"{args.predictions}: {exc}") from None
    if args.details:
        from crawl2score.workdir import atomic_write_text

        atomic_write_text(args.details, "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records))
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
