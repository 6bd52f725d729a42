"""The `crawl2score` command line: one subcommand per stage plus the whole pipeline (`run`)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from crawl2score import __version__
from crawl2score.commands import CLIError, OneLineArgumentParser
from crawl2score.errors import BadInput, FailedElsewhere

# Each module exposes register(subparsers); the order is the order of `--help`.
COMMAND_MODULES = ("pipeline", "data", "tokenizer", "model", "train", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="crawl2score",
        description="Common Crawl to a scored DeepSeek-V3-style model, as Prefect flows.",
    )
    parser.add_argument("--version", action="version", version=f"crawl2score {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"crawl2score.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, BadInput) as exc:  # BadInput: bad input found inside a stage (crawl2score.errors)
        return _fail(f"crawl2score: error: {exc}", 2)
    except OSError as exc:  # the environment, not a bug: a full disk, a read-only or missing folder
        return _fail(f"crawl2score: error: {exc}", 2)
    except FailedElsewhere as exc:  # a deployment run failed; its own log has the cause
        return _fail(f"crawl2score: error: {exc}", 1)
    except KeyboardInterrupt:
        return _fail("crawl2score: interrupted", 130)


def _fail(line: str, code: int) -> int:
    """Print the line that ends the run and keep it the last one. A run without a Prefect server starts a
    temporary one, whose exit handler logs "Stopping temporary server on ..." at INFO on the `prefect`
    logger after we return; that logger's INFO records are dropped from here on (its warnings stay)."""
    logging.getLogger("prefect").setLevel(logging.WARNING)
    print(line, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
