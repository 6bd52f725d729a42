"""`train`: pretrain on WORKDIR/tokens/ as the Prefect train stage (resumes from the newest checkpoint)."""

from __future__ import annotations

import argparse
import json

from crawl2score.commands import CLIError, add_common_args, config_from_args, prepare_prefect


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="pretrain the model on WORKDIR/tokens/ (resumable; torchrun for --nproc > 1)"
    )
    add_common_args(p)
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        metavar="N",
        help="processes on this node (default: one per GPU, or 1 on CPU); N > 1 runs torchrun",
    )
    p.add_argument("--force", action="store_true", help="start over even if checkpoints or a finished run exist")
    p.add_argument(
        "--prepare",
        action="store_true",
        help="write WORKDIR/checkpoints/run-config.json and print the trainer command, without training "
        "(for launchers such as infra/slurm_train.sbatch)",
    )
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.nproc is not None and args.nproc < 1:
        raise CLIError(f"--nproc {args.nproc}: need at least 1")
    from crawl2score.workdir import missing_input

    problem = missing_input(cfg, "train")
    if problem:
        raise CLIError(problem)
    if cfg.train.global_batch_size % (args.nproc or 1):
        raise CLIError(
            f"train.global_batch_size {cfg.train.global_batch_size} is not a multiple of --nproc {args.nproc}"
        )
    if args.prepare:
        from crawl2score.flows.train import prepare_run

        path, cmd = prepare_run(cfg, args.nproc or cfg.launch.nproc or 1)
        where = "every node" if cfg.launch.nnodes > 1 else "this node"
        print(f"run config: {path}\ntrainer command ({where}): {' '.join(cmd)}")
        return 0
    prepare_prefect(cfg)
    from crawl2score.flows.train import train_flow

    result = train_flow(config=cfg, force=args.force, nproc=args.nproc)
    print(json.dumps(result, indent=2, default=str))
    return 0
