"""Every CLI error is one line on stderr and exit code 2, and writes nothing: bad arguments, missing
inputs of each stage, bad config files and overrides."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

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


def _warc_record(url: str, html: bytes) -> bytes:
    block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + html
    head = (
        "WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:12345678-0000-4000-8000-000000000000>\r\n"
        f"WARC-Date: 2024-03-01T00:00:00Z\r\nWARC-Target-URI: {url}\r\n"
        f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(block)}\r\n\r\n"
    )
    return head.encode() + block + b"\r\n\r\n"


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


BAD_INPUTS = {
    "empty": (b"", "empty file"),
    "text": (b"# README\nnot a crawl\n", "not a WARC file"),
    "jsonl-gz": (gzip.compress(b'{"text": "a corpus, not a crawl"}\n'), "not a WARC file"),
    "cut-gzip": (gzip.compress(_warc_record("http://t.test/", b"<p>hi</p>"))[:20], "not a readable gzip file"),
    # a flipped byte in the deflate data: zlib.error, not an OSError
    "bad-deflate": (
        (lambda z: z[:12] + bytes([z[12] ^ 0xFF]) + z[13:])(gzip.compress(_warc_record("http://t.test/", b"x" * 50))),
        "not a readable gzip file",
    ),
    "cut-zstd": (_zstd(_warc_record("http://t.test/", b"<p>hi</p>" * 500))[:30], "not a readable zstd file"),
    "zstd-text": (_zstd(b"# README\nnot a crawl\n"), "not a WARC file"),
}


@pytest.mark.parametrize("command", ["data", "run"])
@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_local_input_that_is_no_warc_is_one_line_exit_2(kind, command, tmp_path, monkeypatch, capsys):
    """Checked before anything runs, by the stage and the whole pipeline alike: one line naming the file
    and what is wrong; no stage output."""
    monkeypatch.chdir(tmp_path)
    data, needle = BAD_INPUTS[kind]
    Path("in.warc.gz").write_bytes(data)
    assert main([command, "--workdir", "w", "--input", "in.warc.gz"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in.warc.gz" in err and needle in err, err
    assert not Path("w").exists()


def test_data_stage_that_reads_no_page_fails_and_one_that_keeps_none_says_so(tmp_path, monkeypatch, capsys):
    """A file that passes the start check but holds no readable record (it ends in its first header): the stage
    fails with one line and writes no marker. Pages read and all filtered out: the stage completes (a
    result), and the tokenizer then says the data stage kept nothing instead of "no files found"."""
    from crawl2score.workdir import read_marker

    monkeypatch.chdir(tmp_path)
    whole = gzip.compress(_warc_record("http://t.test/", b"<html><body><p>" + b"tiny " * 3 + b"</p></body></html>"))
    Path("cut.warc.gz").write_bytes(gzip.compress(_warc_record("http://t.test/", b"")[:40]))
    assert main(["data", "--workdir", "w", "--input", "cut.warc.gz"]) == 2
    err = capsys.readouterr().err  # the run's log (Prefect logs the failed task), then the error as last line
    last = err.strip().splitlines()[-1]
    assert last.startswith("crawl2score: error: data: no page read from 1 input file(s): 1 of them corrupt"), err
    assert read_marker("w", "data") is None and Path("w/data/stats.json").is_file()

    Path("short.warc.gz").write_bytes(whole)
    assert main(["data", "--workdir", "w2", "--input", "short.warc.gz"]) == 0
    assert read_marker("w2", "data")["figures"]["output_documents"] == 0
    capsys.readouterr()
    assert main(["tokenizer", "--workdir", "w2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the data stage kept no document" in err, err


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("00001.jsonl.gz", b"<html>an error page saved as .gz</html>", "00001.jsonl.gz: cannot be read (Not a gzipped"),
        ("00001.jsonl", b'{"text": "fine"}\n{"text": cut', "00001.jsonl:2: not valid JSON"),
    ],
    ids=["not-gzip", "bad-json-line"],
)
def test_broken_corpus_file_found_by_the_tokenizer_stage_is_one_line_exit_2(name, content, needle, tmp_path):
    """Found while the stage reads (after the start check), run as a user runs it: Prefect's run log says it
    without a traceback, the last line is the error naming the file, exit 2, and no tokenizer is written
    (once: a traceback and exit 1 for a bad JSON line, and the gzip error named no file)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "00000.jsonl").write_text('{"text": "a good document", "metadata": {"language": "en"}}\n')
    (corpus / name).write_bytes(content)
    res = subprocess.run(
        [sys.executable, "-m", "crawl2score", "tokenizer", "--workdir", "w", "--input", "corpus"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        # a user's shell: no PREFECT_ settings of this process (the suite quiets Prefect's logs), so the CLI
        # starts a temporary server, whose "Stopping temporary server" line once followed the error
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
            "PREFECT_HOME": str(tmp_path / ".prefect"),
        },
        timeout=300,
    )
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 2, res.stderr
    assert last.startswith(f"crawl2score: error: {Path('corpus', name)}") and needle in last, res.stderr
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert "Task run failed with exception: CorpusError(" in res.stderr, res.stderr  # the run's log, one line
    assert not (tmp_path / "w" / "tokenizer").exists()
