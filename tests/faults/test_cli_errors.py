"""Every CLI error is one line on stderr and exit code 2, and writes nothing: bad arguments, missing
inputs of each stage, bad config files and overrides."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from crawl2score.cli import main

CASES = [
    (["eval"], "no checkpoint to evaluate"),
    (["eval", "--checkpoint", "nothere"], "no checkpoint to evaluate"),
    (["train"], "the tokens stage has not completed"),
    (["tokenizer"], "no .jsonl"),
    (["tokens"], "no .jsonl"),
    (["data", "--input", "nothere.warc.gz"], "input not found"),
    (["export-hf", "nothere", "out"], "nothere"),
    (["import-hf", "nothere", "out"], "nothere"),
    (["score", "--benchmark", "math500", "--predictions", "nothere.jsonl"], "nothere.jsonl"),
    (["score", "--benchmark", "nosuch", "--predictions", "p.jsonl"], "--benchmark"),
    (["run", "--config", "nothere.yaml"], "config file not found"),
    (["run", "--set", "train.steps=many"], "train.steps"),
    (["run", "--set", "nosection.key=1"], "nosection"),
    (["run", "--set", "novalue"], "novalue"),
    (["sample-data", "out", "--pages", "5"], "--pages"),
    (["train", "--nproc", "x"], "--nproc"),
    (["server", "--port", "notanint"], "--port"),
    (["nosuchcommand"], "invalid choice"),
    ([], "COMMAND"),
]


@pytest.mark.parametrize(("argv", "needle"), CASES, ids=[" ".join(a) or "(none)" for a, _ in CASES])
def test_cli_error_is_one_line_exit_2(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text("")
    try:
        code = main([*argv[:1], "--workdir", "w", *argv[1:]] if argv and _takes_workdir(argv[0]) else argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("crawl2score"), err
    assert needle in err
    assert "Traceback" not in err
    assert not (tmp_path / "w").exists() and not (tmp_path / "out").exists()


def _takes_workdir(command: str) -> bool:
    return command in {"eval", "train", "tokenizer", "tokenize", "data", "run"}


def test_eval_without_checkpoint_as_a_process(tmp_path):
    """The reported case, end to end: once a traceback with exit 1."""
    res = subprocess.run(
        [sys.executable, "-m", "crawl2score", "eval", "--workdir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "no checkpoint to evaluate" in res.stderr


def test_keyless_marker_stops_cli_and_flow_alike(tmp_path, monkeypatch, capsys):
    """A stage marker without its key (edited by hand, another layout) is not a completed stage: the CLI
    stops before Prefect starts and the flow's own check stops with the same line (one definition)."""
    from crawl2score.config import Config
    from crawl2score.flows._stage import StageInputMissing, upstream_key
    from crawl2score.workdir import MARKER, stage_dir, write_marker

    monkeypatch.chdir(tmp_path)
    write_marker("w", "data", "d", {})
    write_marker("w", "tokenizer", "k", {})
    (stage_dir("w", "tokens") / MARKER).parent.mkdir(parents=True, exist_ok=True)
    (stage_dir("w", "tokens") / MARKER).write_text('{"finished": 1}')
    line = "w: the tokens stage's marker has no key (run `crawl2score tokens --force`)"
    assert main(["train", "--workdir", "w"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and line in err, err
    assert not (tmp_path / "w" / "checkpoints").exists()
    with pytest.raises(StageInputMissing, match="marker has no key"):
        upstream_key(Config.model_validate({"workdir": "w"}), "train", "tokens")
    assert upstream_key(Config.model_validate({"workdir": "w"}), "tokens", "tokenizer") == "k"
