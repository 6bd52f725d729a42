"""`model-info`, `export-hf` and `import-hf`: the model's figures and Hugging Face interop."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from crawl2score.commands import CLIError


def register(subparsers: argparse._SubParsersAction) -> None:
    info = subparsers.add_parser(
        "model-info",
        help="parameters, activated parameters, training FLOPs and KV cache per token of a model preset",
        description="Counted on the meta device: even deepseek-v3 needs no memory. Conventions in docs/model.md.",
    )
    src = info.add_mutually_exclusive_group()
    src.add_argument("--preset", default=None, help="tiny, small, medium, deepseek-v2-lite, deepseek-v3")
    src.add_argument("--config", default=None, help="project YAML config (its model section) or preset name")
    info.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="model.KEY=VALUE",
        help="override a model key (with --config)",
    )
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_model_info)

    exp = subparsers.add_parser(
        "export-hf",
        help="write a checkpoint as a transformers DeepseekV3ForCausalLM folder (config, safetensors, tokenizer)",
    )
    exp.add_argument("checkpoint", help="a step dir or a checkpoints/ dir (follows `latest`)")
    exp.add_argument("out", help="output folder")
    exp.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer folder to copy (default: <checkpoint>/../../tokenizer when it exists)",
    )
    exp.set_defaults(func=cmd_export_hf)

    imp = subparsers.add_parser(
        "import-hf",
        help="convert a DeepseekV3 folder (ours, DeepSeek's or save_pretrained's) to a checkpoint",
    )
    imp.add_argument("hf_dir", help="folder with config.json and *.safetensors")
    imp.add_argument("checkpoint", help="step dir to write (model.safetensors + config.json)")
    imp.set_defaults(func=cmd_import_hf)


def _model_args(args: argparse.Namespace):
    from crawl2score.model.presets import get_preset

    if args.config is None:
        try:
            model_args = get_preset(args.preset or "tiny")
        except KeyError as exc:
            raise CLIError(exc.args[0]) from None
        if args.overrides:
            raise CLIError("--set needs --config")
        return args.preset or "tiny", model_args
    from crawl2score.config import load_config

    cfg = load_config(args.config, args.overrides, None)  # a ConfigError is BadInput: one line
    return str(args.config), cfg.model


def cmd_model_info(args: argparse.Namespace) -> int:
    from crawl2score.model.info import format_info, model_info

    name, model_args = _model_args(args)
    info = model_info(model_args)
    if args.json:
        print(json.dumps({"name": name, **info, "model": model_args.to_dict()}, indent=2))
    else:
        print(format_info(name, info))
    return 0


def _default_tokenizer(checkpoint: Path) -> Path | None:
    from crawl2score.model.checkpoint import default_tokenizer_dir

    tok = default_tokenizer_dir(checkpoint)
    return tok if (tok / "tokenizer.json").exists() else None


def cmd_export_hf(args: argparse.Namespace) -> int:
    from crawl2score.model.checkpoint import resolve_checkpoint
    from crawl2score.model.hf import export_hf

    try:
        step = resolve_checkpoint(args.checkpoint)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from None
    tok = Path(args.tokenizer) if args.tokenizer else _default_tokenizer(step)
    if args.tokenizer and not tok.is_dir():
        raise CLIError(f"--tokenizer {tok}: not a directory")
    try:
        out = export_hf(step, args.out, tok)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    print(f"exported {step} -> {out}" + (f" (tokenizer from {tok})" if tok else " (no tokenizer found)"))
    return 0


def cmd_import_hf(args: argparse.Namespace) -> int:
    from crawl2score.model.hf import import_hf

    try:
        import_hf(args.hf_dir, args.checkpoint)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise CLIError(f"{args.hf_dir}: {exc}") from None
    print(f"imported {args.hf_dir} -> {args.checkpoint}")
    return 0
