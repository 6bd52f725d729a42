"""`tokenizer` (train the byte-level BPE) and `tokens` (encode the corpus into training shards)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from crawl2score.commands import CLIError, add_common_args, config_from_args, prepare_prefect
from crawl2score.config import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, func, help_text in (
        ("tokenizer", cmd_tokenizer, "train the byte-level BPE (tokenizer.vocab_size entries) into WORKDIR/tokenizer"),
        ("tokens", cmd_tokens, "encode the corpus into uint32 shards + manifest in WORKDIR/tokens"),
    ):
        p = subparsers.add_parser(name, help=help_text, description=help_text)
        add_common_args(p)
        p.add_argument(
            "--input",
            default=None,
            metavar="DIR_OR_GLOB",
            help="corpus: datatrove JSONL(.gz)/Parquet or .txt files; default tokenizer.input, else WORKDIR/data/output",
        )
        p.add_argument("--force", action="store_true", help="redo the stage even if its output is current")
        p.set_defaults(func=func)


def _config(args: argparse.Namespace) -> Config:
    if args.input:
        # JSON is valid YAML and keeps globs ("*" starts a YAML alias) a plain string.
        args.overrides = [*args.overrides, f"tokenizer.input={json.dumps(args.input)}"]
    return config_from_args(args)


def _check_inputs(cfg: Config, stage: str) -> None:
    """Fail with one line before Prefect starts: no corpus files, or an earlier stage not completed."""
    from crawl2score.tokenizer.corpus import CorpusError, corpus_files
    from crawl2score.workdir import missing_input, read_marker

    try:
        corpus_files(cfg.tokenizer.input, cfg.workdir)
    except CorpusError as exc:
        ran = cfg.tokenizer.input or read_marker(cfg.workdir, "data")
        hint = "" if ran else " (run `crawl2score data` first, or pass --input)"
        raise CLIError(f"{exc}{hint}") from None
    problem = missing_input(cfg, stage)
    if problem:
        raise CLIError(problem)


def cmd_tokenizer(args: argparse.Namespace) -> int:
    cfg = _config(args)
    _check_inputs(cfg, "tokenizer")
    prepare_prefect(cfg)
    from crawl2score.flows.tokenizer import tokenizer_flow

    return _print(tokenizer_flow(config=cfg, force=args.force))


def cmd_tokens(args: argparse.Namespace) -> int:
    cfg = _config(args)
    _check_inputs(cfg, "tokens")
    prepare_prefect(cfg)
    from crawl2score.flows.tokens import tokens_flow

    return _print(tokens_flow(config=cfg, force=args.force))


def _print(result: dict[str, Any]) -> int:
    print(json.dumps(result, indent=2, default=str, ensure_ascii=False))
    return 0
