"""Weights-only checkpoints (model/checkpoint.py)."""

from __future__ import annotations

import json

import pytest
import torch

from crawl2score.model import load_checkpoint
from crawl2score.model.checkpoint import mark_latest, save_model


def test_save_load_round_trip_through_latest(tmp_path, tiny_model, tiny_args):
    with torch.no_grad():
        tiny_model.layers[1].ffn.gate.expert_bias.uniform_(-0.1, 0.1)  # persistent buffer is saved
    ckpts = tmp_path / "checkpoints"
    save_model(tiny_model, ckpts / "step-10")
    save_model(tiny_model, ckpts / "step-20")
    mark_latest(ckpts / "step-20")
    assert sorted(p.name for p in (ckpts / "step-20").iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((ckpts / "step-20" / "config.json").read_text()) == tiny_args.to_dict()
    assert not [p for p in ckpts.iterdir() if ".tmp" in p.name]
    loaded = load_checkpoint(ckpts)
    assert not loaded.training
    tokens = torch.randint(0, tiny_args.vocab_size, (2, 10))
    tiny_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens), tiny_model(tokens), rtol=0, atol=0)
    assert loaded(tokens).shape == (2, 10, tiny_args.vocab_size)


def test_save_into_existing_step_keeps_other_files(tmp_path, tiny_model):
    step = tmp_path / "step-1"
    step.mkdir()
    (step / "train_state.pt").write_text("x")
    save_model(tiny_model, step)
    assert (step / "train_state.pt").exists() and (step / "model.safetensors").exists()


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "damage", ["config-garbage", "config-unknown-key", "weights-cut", "tensor-missing", "tensor-shape"]
)
def test_damaged_step_dir_is_one_line_naming_the_file(tmp_path, tiny_model, damage, capsys):
    """Evaluation and `export-hf` of a step dir damaged after it was written once ended in a JSONDecodeError
    or SafetensorError traceback naming no file (exit 1), or `export-hf` printing only `Expecting value: ...`.
    Now one line naming the file and what is wrong, exit 2 from the CLI; the step dir is left as it was."""
    from safetensors.torch import load_file, save_file

    from crawl2score.cli import main
    from crawl2score.model.checkpoint import CheckpointReadError

    step = tmp_path / "checkpoints" / "step-4"
    save_model(tiny_model, step)
    weights, config = step / "model.safetensors", step / "config.json"
    if damage == "config-garbage":
        config.write_text("not json")
        where, what = config, "not a model config (JSONDecodeError"
    elif damage == "config-unknown-key":
        config.write_text(json.dumps({**json.loads(config.read_text()), "n_layer": 2}))
        where, what = config, "unknown ModelArgs keys: ['n_layer']"
    elif damage == "weights-cut":
        weights.write_bytes(weights.read_bytes()[:1000])
        where, what = weights, "cannot be read (Error while deserializing header"
    else:
        tensors = load_file(str(weights))
        if damage == "tensor-missing":
            del tensors["head.weight"]
            what = "lacks 1 of this model's tensors (head.weight)"
        else:
            tensors["head.weight"] = tensors["head.weight"][:1].clone()
            what = "head.weight has shape [1,"
        save_file(tensors, str(weights))
        where = weights
    before = {p.name: p.read_bytes() for p in step.iterdir()}
    with pytest.raises(CheckpointReadError) as err:
        load_checkpoint(step)
    assert str(err.value).startswith(f"{where}: ") and what in str(err.value), err.value
    assert "\n" not in str(err.value)
    capsys.readouterr()
    assert main(["export-hf", str(tmp_path / "checkpoints" / "step-4"), str(tmp_path / "hf")]) == 2
    out = capsys.readouterr().err
    assert out.count("\n") == 1 and f"crawl2score: error: {where}: " in out, out
    assert not (tmp_path / "hf").exists()
    assert {p.name: p.read_bytes() for p in step.iterdir()} == before
