"""`crawl2score eval -- ARGS` runs lm-eval's own command line with the crawl2score model registered."""

from __future__ import annotations

import argparse

import pytest


def _parser():
    from crawl2score.commands import eval as eval_cmd

    parser = argparse.ArgumentParser()
    eval_cmd.register(parser.add_subparsers())
    return parser


def test_eval_options_become_config_overrides():
    from crawl2score.commands.eval import _eval_overrides

    args = _parser().parse_args(
        [
            "eval",
            "--benchmarks",
            "aime24,math500",
            "--limit",
            "3",
            "--protocol",
            "chat",
            "--max-new-tokens",
            "64",
            "--checkpoint",
            "a",
            "--checkpoint",
            "b",
        ]
    )
    over = _eval_overrides(args)
    from crawl2score.config import load_config

    cfg = load_config("tiny", over)
    assert cfg.eval.benchmarks == ["aime24", "math500"] and cfg.eval.limit == 3 and cfg.eval.protocol == "chat"
    assert cfg.eval.max_new_tokens == 64 and cfg.eval.checkpoints == ["a", "b"]
    old = _parser().parse_args(["eval", "--tasks", "cnmo24"])  # the hidden old spelling still works
    assert _eval_overrides(old) == ['eval.benchmarks=["cnmo24"]']
    assert "--tasks BENCHMARKS" not in _parser()._subparsers._group_actions[0].choices["eval"].format_help()


@pytest.mark.slow
def test_lm_eval_cli_passthrough(tiny_workdir, capsys):
    args = _parser().parse_args(
        [
            "eval",
            "--",
            "--model",
            "crawl2score",
            "--model_args",
            f"checkpoint={tiny_workdir / 'checkpoints'},max_new_tokens=2,truncate_prompts=true",
            "--tasks",
            "c2s_aime24_base",
            "--limit",
            "1",
        ]
    )
    assert args.func(args) == 0
    assert "c2s_aime24_base" in capsys.readouterr().out


def test_lm_eval_passthrough_prompt_too_long_is_one_line(tiny_workdir, capsys):
    """lm-eval's CLI does not read the config: a 4-shot prompt over the tiny model's 256 tokens is one line
    naming the model argument to set, exit 2 (was a traceback, exit 1)."""
    from crawl2score.cli import main

    code = main(
        [
            "eval",
            "--",
            "--model",
            "crawl2score",
            "--model_args",
            f"checkpoint={tiny_workdir / 'checkpoints'},max_new_tokens=2",
            "--tasks",
            "c2s_aime24_base",
            "--limit",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("crawl2score: error: ") and "add truncate_prompts=true to --model_args" in last, err


@pytest.mark.parametrize("where", ["eval.tokenizer", "passthrough"])
def test_missing_tokenizer_folder_is_one_line(tiny_workdir, tmp_path, capsys, where):
    """A tokenizer path that is not there ended in eight tracebacks and transformers' complaint that
    '/nonexistent' is not a valid hub repo id; now one line naming the path and the setting, exit 2,
    before Prefect starts (and, through lm-eval's own CLI, before the model loads)."""
    from crawl2score.cli import main

    missing = tmp_path / "nonexistent"
    if where == "eval.tokenizer":
        argv = ["eval", "--workdir", str(tiny_workdir), "--set", f"eval.tokenizer={missing}", "--limit", "1"]
    else:
        model_args = f"checkpoint={tiny_workdir / 'checkpoints'},tokenizer={missing}"
        argv = ["eval", "--", "--model", "crawl2score", "--model_args", model_args, "--tasks", "c2s_aime24_base"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"crawl2score: error: {missing}: no such folder (the checkpoint's tokenizer folder"), err
    # (lm-eval's log handler may still hold an earlier test's closed stderr: "--- Logging error ---")
    assert "check_tokenizer_dir" not in err and (where == "passthrough" or "Traceback" not in err), err
