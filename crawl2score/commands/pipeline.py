"""`run` (the whole pipeline flow), `server` (local Prefect UI), `deploy` and `worker` (work pools)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from crawl2score.commands import CLIError, add_common_args, config_from_args, prepare_prefect
from crawl2score.workdir import STAGES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="run the whole pipeline: data → tokenizer → tokens → train → eval")
    add_common_args(p)
    p.add_argument("--input", action="append", default=None, help="data input (path, glob, URL, crawl id)")
    p.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="STAGE",
        help=f"redo a stage even if its output is current (repeatable; one of {', '.join(STAGES)}, or all)",
    )
    p.add_argument("--stages", default=None, help="comma-separated subset of stages to run, in pipeline order")
    p.set_defaults(func=cmd_run)

    s = subparsers.add_parser("server", help="start a local Prefect server and UI on 127.0.0.1 (SQLite)")
    add_common_args(s)
    s.add_argument("--port", type=int, default=None, help="API/UI port (default: prefect.server_port)")
    s.add_argument("--background", action="store_true", help="return once the server answers")
    s.add_argument("--stop", action="store_true", help="stop the server `--background` started (same prefect.home)")
    s.set_defaults(func=cmd_server)

    c = subparsers.add_parser("config", help="print the resolved config (YAML), or the table of every key")
    add_common_args(c)
    c.add_argument("--keys", action="store_true", help="print a markdown table of every key, default and help")
    c.set_defaults(func=cmd_config)

    d = subparsers.add_parser("deploy", help="create the work pools and deploy the flows to a Prefect server")
    add_common_args(d)
    d.add_argument("--source", default=None, help="where workers pull the code from (default: this checkout)")
    d.set_defaults(func=cmd_deploy)

    w = subparsers.add_parser("worker", help="start a Prefect worker on a work pool (gpu or cpu)")
    add_common_args(w)
    w.add_argument("--pool", default=None, help="work pool name (default: prefect.gpu_pool)")
    w.add_argument("--limit", type=int, default=1, help="flow runs at once on this worker")
    w.set_defaults(func=cmd_worker)


def cmd_run(args: argparse.Namespace) -> int:
    if args.input:
        args.overrides = [*args.overrides, f"data.input={json.dumps(args.input)}"]
    cfg = config_from_args(args)
    from crawl2score.workdir import select_stages

    def names(raw: str | None) -> list[str] | None:
        return None if raw is None else [s.strip() for s in raw.split(",") if s.strip()]

    run, force = select_stages(names(args.stages), names(",".join(args.force or [])), ("--stages", "--force"))
    stages = None if args.stages is None else run
    _check_first_stage_inputs(cfg, run)
    prepare_prefect(cfg)
    from crawl2score.flows.pipeline import pipeline

    result = pipeline(config=cfg, force=force or [], stages=stages)  # bad input raises BadInput: one line (cli.py)
    print(json.dumps(result, indent=2, default=str))
    print(f"report: {Path(cfg.workdir).resolve() / 'report.md'}")
    return 0


def _check_first_stage_inputs(cfg, wanted: list[str]) -> None:
    """A run that starts after `data` needs the stages before it completed: say so in one line before Prefect
    starts (a failure inside the flow would come with Prefect's own error log)."""
    from crawl2score.workdir import missing_input

    problem = missing_input(cfg, wanted[0], through=wanted[-1]) if wanted else None
    if problem:
        raise CLIError(problem)
    if "data" in wanted and cfg.data.input:
        from crawl2score.data.inputs import resolve_inputs

        resolve_inputs(cfg.data, warn=False)  # as `crawl2score data` does: one line before Prefect starts


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from crawl2score.config import config_keys_markdown

    cfg = config_from_args(args)
    if args.keys:
        print(config_keys_markdown())
    else:
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True), end="")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from crawl2score.server import start_server, stop_server

    cfg = config_from_args(args)
    home = cfg.prefect.home or str(Path.cwd() / ".prefect")
    if args.stop:
        return stop_server(home)
    port = args.port or cfg.prefect.server_port
    return start_server(home, cfg.prefect.server_host, port, foreground=not args.background)


def cmd_deploy(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    prepare_prefect(cfg)
    if not os.environ.get("PREFECT_API_URL"):
        raise CLIError("deploy needs a Prefect server: start `crawl2score server` or set prefect.api_url")
    from crawl2score.infra.deploy import deploy_all

    for line in deploy_all(cfg, source=args.source):
        print(line)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    prepare_prefect(cfg)
    if not os.environ.get("PREFECT_API_URL"):
        raise CLIError("worker needs a Prefect server: start `crawl2score server` or set prefect.api_url")
    pool = args.pool or cfg.prefect.gpu_pool
    # Flow runs started by this worker inherit its environment: heartbeats drive the zombie automation.
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(cfg.prefect.heartbeat_s))
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--limit", str(args.limit)]
    os.execvpe(cmd[0], cmd, os.environ)
