"""`crawl2score train` fails fast, with one line, before Prefect starts."""

from __future__ import annotations

from crawl2score.cli import main


def test_train_needs_tokens(tmp_path, capsys):
    assert main(["train", "--workdir", str(tmp_path / "w")]) == 2
    assert "the tokens stage has not completed" in capsys.readouterr().err


def test_train_rejects_bad_nproc_and_unknown_key(tmp_path, capsys):
    assert main(["train", "--workdir", str(tmp_path), "--nproc", "0"]) == 2
    assert main(["train", "--workdir", str(tmp_path), "--set", "train.stepz=3"]) == 2
    assert "stepz" in capsys.readouterr().err
