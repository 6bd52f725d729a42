"""`data` (run the data stage flow) and `sample-data` (write the embedded sample corpus)."""

from __future__ import annotations

import argparse
import json

from crawl2score.commands import CLIError, add_common_args, config_from_args, prepare_prefect


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="WARC files / URLs / a crawl id → deduplicated en+zh JSONL")
    add_common_args(p)
    p.add_argument(
        "--input",
        action="append",
        default=None,
        metavar="PATH|GLOB|URL|CC-MAIN-YYYY-WW",
        help="input (repeatable); default: data.input, or the embedded sample when that is empty",
    )
    p.add_argument("--force", action="store_true", help="redo the stage even if its output is current")
    p.set_defaults(func=cmd_data)

    s = subparsers.add_parser("sample-data", help="write the embedded sample WARC and its ground-truth manifest")
    s.add_argument("out", metavar="OUT", help="output directory (sample.warc.gz, manifest.json)")
    s.add_argument("--pages", type=int, default=2400, help="pages in the sample (>= 100; default 2400)")
    s.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    s.set_defaults(func=cmd_sample)


def cmd_data(args: argparse.Namespace) -> int:
    if args.input:
        args.overrides = [*args.overrides, f"data.input={json.dumps(args.input)}"]
    cfg = config_from_args(args)
    from crawl2score.data.inputs import resolve_inputs

    if cfg.data.input:
        # Fail fast, with one line (InputError is BadInput), before Prefect starts; the stage's task warns of
        # bad files among good ones, once.
        resolve_inputs(cfg.data, warn=False)
    prepare_prefect(cfg)
    from crawl2score.flows.data import data_flow

    result = data_flow(config=cfg, force=args.force)  # bad input found while reading it: BadInput, one line
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    if args.pages < 100:
        raise CLIError(f"--pages {args.pages}: at least 100 pages are needed for every kind of page")
    from crawl2score.data.sample import write_sample

    manifest = write_sample(args.out, pages=args.pages, seed=args.seed)
    print(json.dumps({"out": args.out, "pages": manifest["pages"], "counts": manifest["counts"]}, indent=2))
    return 0
