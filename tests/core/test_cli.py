"""The command line: one-line errors, exit codes, nothing written on bad input."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from crawl2score.cli import build_parser, main

# Each subcommand and options of its own that its help must show. The stage commands are named as the
# stages are everywhere else (flows, deployments, work-directory folders).
COMMON = ["--config", "--workdir", "--set"]
COMMANDS: dict[str, list[str]] = {
    "run": [*COMMON, "--input", "--force", "--stages"],
    "data": [*COMMON, "--input", "--force"],
    "tokenizer": [*COMMON, "--input", "--force"],
    "tokens": [*COMMON, "--input", "--force"],
    "train": [*COMMON, "--nproc", "--force"],
    "eval": [*COMMON, "--benchmarks", "--protocol", "--limit", "--checkpoint", "--force"],
    "score": ["--benchmark", "--predictions", "--allow-partial", "--details", "--benchmarks-dir"],
    "sample-data": ["--pages", "--seed"],
    "server": [*COMMON, "--port", "--background"],
    "config": [*COMMON, "--keys"],
    "deploy": [*COMMON, "--source"],
    "worker": [*COMMON, "--pool", "--limit"],
    "model-info": ["--preset", "--config", "--set", "--json"],
    "export-hf": ["--tokenizer"],
    "import-hf": [],
}


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_the_subcommands_are_exactly_the_documented_ones() -> None:
    primary = {name for name, sub in _subcommands().items() if sub.prog.endswith(f" {name}")}
    assert primary == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_subcommand_shows_its_own_help(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: crawl2score {name} ")
    shown = set(re.findall(r"^\s+(--[a-z-]+)", text, flags=re.M))
    assert set(COMMANDS[name]) <= shown, sorted(set(COMMANDS[name]) - shown)
    # the help names this command's own purpose, not the top-level list of commands
    assert "{run,data" not in text


def test_bad_override_exits_2_with_one_line(tmp_path, capsys) -> None:
    code = main(["run", "--workdir", str(tmp_path / "w"), "--set", "train.nosuch=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "train.nosuch: unknown key" in err
    assert not (tmp_path / "w").exists()


def test_bad_stage_name(tmp_path, capsys) -> None:
    code = main(["run", "--workdir", str(tmp_path / "w"), "--force", "nosuch"])
    assert code == 2
    assert "unknown stage 'nosuch'" in capsys.readouterr().err


def test_console_entry_point_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "crawl2score", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("crawl2score ")


def test_run_without_the_earlier_stages_is_one_line(tmp_path, capsys) -> None:
    """`run --stages train` on an empty work directory: the missing tokens stage is named, exit 2."""
    code = main(["run", "--workdir", str(tmp_path / "w"), "--stages", "train"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert "the tokens stage has not completed" in err and "crawl2score tokens" in err
