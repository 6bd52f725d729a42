"""Transformer.loss: chunked CE, gradients, init."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crawl2score.model import Transformer
from crawl2score.model.moe import MoE
from tests.tolerance import assert_close


def _batch(args, B=2, T=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, args.vocab_size, (B, T), generator=g)
    labels = torch.roll(tokens, -1, 1)
    labels[:, -1] = -100
    return tokens, labels


def test_chunked_ce_equals_full_logits(tiny_model, tiny_args):
    tokens, labels = _batch(tiny_args)
    tiny_model.eval()
    with torch.no_grad():
        ref = F.cross_entropy(tiny_model(tokens).flatten(0, 1), labels.flatten(), ignore_index=-100)
    # The full-logits path and the chunked one share the trunk; they differ in the head and the CE sums.
    terms = tiny_args.dim + tiny_args.vocab_size + labels.numel()
    for chunk in (5, 7, 4096):
        out = tiny_model.loss(tokens, labels, mtp_lambda=0.0, seq_aux_alpha=0.0, loss_chunk=chunk)
        assert_close(out.ce_loss, ref, terms=terms)
        assert_close(out.loss.detach(), ref, terms=terms)


def test_gradients_reach_every_learnt_parameter_and_not_the_bias(tiny_model, tiny_args):
    tokens, labels = _batch(tiny_args, B=2, T=24)
    tiny_model.train()
    out = tiny_model.loss(tokens, labels, loss_chunk=16)
    out.loss.backward()
    assert out.mtp_loss > 0 and out.balance_loss > 0
    missing = [n for n, p in tiny_model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []
    for m in tiny_model.modules():
        if isinstance(m, MoE):
            assert not m.gate.expert_bias.requires_grad and m.gate.expert_bias.grad is None
            assert "gate.expert_bias" not in dict(m.named_parameters())


def test_total_loss_composition(tiny_model, tiny_args):
    tokens, labels = _batch(tiny_args)
    tiny_model.train()
    out = tiny_model.loss(tokens, labels, seq_aux_alpha=1e-2, mtp_lambda=0.3)
    assert_close(out.loss.detach(), out.ce_loss + 0.3 * out.mtp_loss + out.balance_loss, terms=3)


def test_init_std(tiny_args):
    torch.manual_seed(0)
    model = Transformer(tiny_args.replace(init_std=0.006))
    w = model.layers[1].ffn.experts.w1
    # Statistical, not rounding: the std of n normal samples is off by ~1/sqrt(2n) relative; allow 5 of those.
    assert w.std().item() == pytest.approx(0.006, rel=5 / (2 * w.numel()) ** 0.5)
    assert torch.all(model.norm.weight == 1)
