"""transformers parity and HF export/import (needs transformers, offline)."""

from __future__ import annotations

import json

import pytest
import torch

from crawl2score.model import load_checkpoint
from crawl2score.model.checkpoint import save_model
from crawl2score.model.hf import export_hf, import_hf
from tests.tolerance import assert_close, model_terms

transformers = pytest.importorskip("transformers")


@pytest.fixture
def exported(tmp_path, tiny_args, make_model):
    model = make_model(tiny_args, seed=3, scale=5.0).eval()
    with torch.no_grad():  # small biases: change selection without ties
        for m in model.modules():
            if hasattr(m, "expert_bias"):
                m.expert_bias.uniform_(-0.01, 0.01)
    save_model(model, tmp_path / "ckpt" / "step-1")
    tok = tmp_path / "tokenizer"
    tok.mkdir()
    (tok / "tokenizer.json").write_text(json.dumps({"added_tokens": [{"id": 1, "content": "<eos>"}]}))
    (tok / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>"}))
    export_hf(tmp_path / "ckpt" / "step-1", tmp_path / "hf", tokenizer_dir=tok)
    return model, tmp_path


def test_transformers_logits_equal_native(exported, tiny_args):
    model, tmp = exported
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp / "hf").eval()
    assert type(hf).__name__ == "DeepseekV3ForCausalLM"
    cfg = json.loads((tmp / "hf" / "config.json").read_text())
    assert cfg["model_type"] == "deepseek_v3" and cfg["eos_token_id"] == 1
    assert (tmp / "hf" / "tokenizer.json").exists()
    tokens = torch.randint(0, tiny_args.vocab_size, (2, 14))
    with torch.no_grad():
        assert_close(hf(tokens).logits.float(), model(tokens), terms=model_terms(tiny_args, 14))


def test_export_import_round_trip_with_mtp(exported):
    model, tmp = exported
    back = import_hf(tmp / "hf", tmp / "back")
    assert back.args == model.args
    ref = model.state_dict()
    assert set(back.state_dict()) == set(ref)
    assert all(torch.equal(v, ref[k]) for k, v in back.state_dict().items())
    assert load_checkpoint(tmp / "back").args.n_mtp_layers == model.args.n_mtp_layers


def test_import_from_save_pretrained(exported, tiny_args):
    model, tmp = exported
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp / "hf")
    hf.save_pretrained(tmp / "hf2")
    back = import_hf(tmp / "hf2", tmp / "back2")
    tokens = torch.randint(0, tiny_args.vocab_size, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(back(tokens), model(tokens), rtol=0, atol=0)


def test_softmax_router_refused(tmp_path, tiny_args, make_model):
    save_model(make_model(tiny_args.replace(score_func="softmax", norm_topk_prob=False)), tmp_path / "s")
    with pytest.raises(ValueError, match="sigmoid"):
        export_hf(tmp_path / "s", tmp_path / "out")
