"""`model-info`, `export-hf`, `import-hf` through their own argparse registration."""

from __future__ import annotations

import argparse
import json

import torch

from crawl2score.commands import model as model_cmd
from crawl2score.model.checkpoint import mark_latest, save_model


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    model_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_model_info_json(capsys):
    assert _run(["model-info", "--preset", "deepseek-v3", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "deepseek-v3" and round(info["total_params"] / 1e9) == 671
    assert info["kv_cache_bytes_per_token"] < info["kv_cache_bytes_per_token_mha"]


def test_model_info_from_config(capsys):
    assert _run(["model-info", "--config", "tiny", "--set", "model.dim=32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["dim"] == 32


def test_export_import_cli_with_default_tokenizer(tmp_path, tiny_model, tiny_args, capsys):
    work = tmp_path / "work"
    save_model(tiny_model, work / "checkpoints" / "step-5")
    mark_latest(work / "checkpoints" / "step-5")
    (work / "tokenizer").mkdir()
    (work / "tokenizer" / "tokenizer.json").write_text(json.dumps({"added_tokens": []}))
    assert _run(["export-hf", str(work / "checkpoints"), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "tokenizer.json").exists()
    assert _run(["import-hf", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    from crawl2score.model import load_checkpoint

    tokens = torch.randint(0, tiny_args.vocab_size, (1, 6))
    with torch.no_grad():
        # Same weights, same process, same kernels: the round trip is exact.
        assert torch.equal(load_checkpoint(tmp_path / "back")(tokens), tiny_model.eval()(tokens))
