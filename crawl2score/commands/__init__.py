"""Subcommands of the `crawl2score` CLI, one module per stage; each exposes `register(subparsers)`.

Shared pieces live here so every subcommand takes the same `--config`, `--workdir` and `--set`, and fails
the same way: one line on stderr naming the input and the problem, exit code 2, nothing written.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from crawl2score.config import Config, load_config


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error (argparse prints the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML file or preset name (tiny, small, medium); default tiny")
    parser.add_argument("--workdir", default=None, help="work directory (default: from config, `work`)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), e.g. --set train.steps=50",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides, args.workdir)  # a ConfigError is BadInput: one line


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"crawl2score: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def prepare_prefect(cfg: Config) -> None:
    """Prefect settings before the first Prefect import: project-local home, no telemetry."""
    from pathlib import Path

    from crawl2score.runtime import configure_prefect_env
    from crawl2score.server import running_server_url

    home = cfg.prefect.home or str(Path.cwd() / ".prefect")
    # A `crawl2score server` started from this project is used when it is up, so runs show in its UI.
    configure_prefect_env(home, cfg.prefect.api_url or running_server_url(home))
