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
