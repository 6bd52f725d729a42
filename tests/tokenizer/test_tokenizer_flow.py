"""The tokenizer and tokens flows under Prefect, their tasks alone, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crawl2score.config import Config
from crawl2score.config.tokenizer import TokenizerConfig
from crawl2score.model.shards import TokenShards
from crawl2score.workdir import read_marker, write_marker

FLOW_VOCAB = 1024


def _config(workdir: Path, **tok) -> Config:
    # A byte budget keeps each training run to a second or two; tokenization still reads the whole corpus.
    section = {"vocab_size": FLOW_VOCAB, "baseline": False, "shard_tokens": 100_000, "byte_budget": 300_000, **tok}
    return Config(workdir=str(workdir), tokenizer=TokenizerConfig(**section))


def _fake_data_stage(workdir: Path, small_corpus: list[Path]) -> None:
    out = workdir / "data" / "output"
    out.mkdir(parents=True)
    for f in small_corpus:
        (out / f.name).write_bytes(f.read_bytes())
    write_marker(workdir, "data", "datakey0", {})


def test_tokenizer_and_tokens_flows_run_then_skip(tmp_path: Path, small_corpus, prefect_harness) -> None:
    from crawl2score.flows.tokenizer import tokenizer_flow
    from crawl2score.flows.tokens import tokens_flow

    _fake_data_stage(tmp_path, small_corpus)
    cfg = _config(tmp_path)
    first = tokenizer_flow(cfg)
    assert not first["skipped"] and first["figures"]["vocab_size"] == FLOW_VOCAB
    tokens = tokens_flow(cfg)
    assert not tokens["skipped"] and tokens["figures"]["num_shards"] >= 1
    manifest = json.loads((tmp_path / "tokens" / "manifest.json").read_text())
    assert manifest["tokenizer_hash"] == first["figures"]["tokenizer_hash"]
    assert TokenShards(tmp_path / "tokens").num_tokens == manifest["num_tokens"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert {"tokenizer", "tokens"} <= set(report)

    assert tokenizer_flow(cfg)["skipped"] and tokens_flow(cfg)["skipped"]
    # New data → both stages redo; force redoes one.
    write_marker(tmp_path, "data", "datakey1", {})
    assert not tokenizer_flow(cfg)["skipped"]
    assert not tokens_flow(cfg)["skipped"]
    assert not tokens_flow(cfg, force=True)["skipped"]
    assert read_marker(tmp_path, "tokens")["key"] == tokens_flow(cfg)["key"]


def test_tokens_alone_refuses_a_tokenizer_made_with_other_settings(
    tmp_path: Path, small_corpus, prefect_harness, monkeypatch, capsys
) -> None:
    """Changing tokenizer.vocab_size and running `tokens` alone once encoded with the old tokenizer
    silently; the flow and the CLI now stop with one line naming the changed key, and `run` would redo it."""
    from crawl2score.cli import main
    from crawl2score.flows._stage import StageInputMissing
    from crawl2score.flows.tokenizer import tokenizer_flow
    from crawl2score.flows.tokens import tokens_flow

    _fake_data_stage(tmp_path, small_corpus)
    tokenizer_flow(_config(tmp_path))
    line = (
        f"{tmp_path}: the tokenizer stage's output was made with other settings (tokenizer.vocab_size 1024 -> 2048); "
        "redo them with this run's settings first: `crawl2score run --stages tokenizer,tokens` with the same config "
        'and --set (from the UI: a pipeline run with stages ["tokenizer", "tokens"] and the same overrides)'
    )
    with pytest.raises(StageInputMissing) as err:
        tokens_flow(_config(tmp_path, vocab_size=2 * FLOW_VOCAB))
    assert str(err.value) == line
    assert not (tmp_path / "tokens").exists()
    sets = ["tokenizer.baseline=false", "tokenizer.shard_tokens=100000", "tokenizer.byte_budget=300000"]
    args = ["tokens", "--workdir", str(tmp_path), *[a for s in sets for a in ("--set", s)]]
    assert main([*args, "--set", f"tokenizer.vocab_size={2 * FLOW_VOCAB}"]) == 2
    out = capsys.readouterr().err
    assert out.count("\n") == 1 and line in out, out
    # the tokenizer's settings, with others that only change how shards are written: encoded
    assert not tokens_flow(_config(tmp_path, shard_tokens=50_000, workers=1, encoder="tokenizers"))["skipped"]


def test_user_input_is_keyed_on_its_files(tmp_path: Path, small_corpus, prefect_harness) -> None:
    """With `tokenizer.input` no data stage is needed; editing a corpus file makes the tokenizer stale."""
    import shutil

    from crawl2score.flows.tokenizer import tokenizer_flow

    corpus = tmp_path / "corpus"
    shutil.copytree(small_corpus[0].parent, corpus)
    cfg = _config(tmp_path / "work", input=str(corpus))
    first = tokenizer_flow(cfg)
    assert not first["skipped"] and first["key"] == tokenizer_flow(cfg)["key"]
    assert tokenizer_flow(cfg)["skipped"]
    edited = sorted(p for p in corpus.iterdir() if p.is_file())[0]
    edited.write_bytes(edited.read_bytes() + b"\n")
    again = tokenizer_flow(cfg)
    assert not again["skipped"] and again["key"] != first["key"]


def test_tasks_run_alone(tmp_path: Path, small_corpus) -> None:
    from crawl2score.tasks.tokenizer import corpus_files_task, tokenizer_task
    from crawl2score.tasks.tokens import tokens_task

    section = _config(tmp_path, input=str(small_corpus[0].parent)).tokenizer
    files = corpus_files_task.fn(section, str(tmp_path))
    assert files == [str(p) for p in small_corpus]
    figures = tokenizer_task.fn(section, str(tmp_path), files)
    assert figures["vocab_size"] == FLOW_VOCAB
    tokens = tokens_task.fn(section, str(tmp_path), files)
    assert tokens["num_tokens"] == TokenShards(tmp_path / "tokens").num_tokens


def test_cli_fails_in_one_line_without_inputs(tmp_path: Path, capsys) -> None:
    from crawl2score.cli import main

    assert main(["tokenizer", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "crawl2score data" in err
    assert main(["tokens", "--workdir", str(tmp_path), "--input", str(tmp_path / "*.jsonl")]) == 2
    assert "no .jsonl" in capsys.readouterr().err


def test_cli_parses_both_subcommands() -> None:
    from crawl2score.cli import build_parser

    parser = build_parser()
    for name in ("tokenizer", "tokens"):
        args = parser.parse_args(
            [name, "--input", "corpus/*.jsonl.gz", "--force", "--set", "tokenizer.vocab_size=4096"]
        )
        assert args.input == "corpus/*.jsonl.gz" and args.force and args.overrides == ["tokenizer.vocab_size=4096"]


@pytest.mark.parametrize("cmd", ["tokenizer", "tokens"])
def test_cli_runs_the_stage(tmp_path: Path, small_corpus, prefect_harness, capsys, cmd) -> None:
    from crawl2score.cli import main

    common = ["--workdir", str(tmp_path), "--input", str(small_corpus[0].parent / "*.jsonl.gz")]
    sets = ["--set", f"tokenizer.vocab_size={FLOW_VOCAB}", "--set", "tokenizer.baseline=false"]
    sets += ["--set", "tokenizer.byte_budget=300000"]
    if cmd == "tokens":
        assert main(["tokenizer", *common, *sets]) == 0
        capsys.readouterr()
    assert main([cmd, *common, *sets]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stage"] == ("tokenizer" if cmd == "tokenizer" else "tokens") and not out["skipped"]
