"""The command line: one-line errors, exit codes, nothing written on bad input."""

from __future__ import annotations

import subprocess
import sys

from crawl2score.cli import build_parser, main


def test_help_lists_every_stage_command() -> None:
    text = build_parser().format_help()
    for command in (
        "run",
        "data",
        "sample-data",
        "server",
        "tokenizer",
        "tokenize",
        "train",
        "eval",
        "score",
        "model-info",
        "export-hf",
        "import-hf",
        "deploy",
        "worker",
    ):
        assert command in text, command


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
