"""MTP: module k at position i reads t_{i+k} and predicts t_{i+k+1}."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crawl2score.model.mtp import mtp_shift
from tests.tolerance import assert_close, model_terms, tolerances


def test_shift_targets_exact_values():
    tokens = torch.tensor([[10, 11, 12, 13, 14, 15]])
    labels = torch.tensor([[11, 12, 13, 14, 15, 16]])  # labels[i] = t_{i+1}
    inp1, lab1 = mtp_shift(tokens, labels, 1)
    assert inp1.tolist() == [[11, 12, 13, 14, 15, 0]]
    assert lab1.tolist() == [[12, 13, 14, 15, 16, -100]]  # t_{i+2}
    inp2, lab2 = mtp_shift(tokens, labels, 2)
    assert inp2[0, :4].tolist() == [12, 13, 14, 15]
    assert lab2.tolist() == [[13, 14, 15, 16, -100, -100]]  # t_{i+3}


def test_shift_does_not_cross_documents():
    tokens = torch.tensor([[1, 2, 3, 9, 4, 5]])
    labels = torch.tensor([[2, 3, 9, 4, 5, 6]])
    doc = torch.tensor([[0, 0, 0, 0, 1, 1]])
    _, lab = mtp_shift(tokens, labels, 1, doc)
    # position 3 (doc 0) would read token 4 of doc 1: masked.
    assert lab.tolist() == [[3, 9, 4, -100, 6, -100]]


def test_mtp_loss_uses_the_next_next_token(tiny_model, tiny_args):
    """Recompute the MTP loss by hand through the drafting API with explicit indices."""
    B, T = 2, 12
    tokens = torch.randint(0, tiny_args.vocab_size, (B, T))
    labels = torch.roll(tokens, -1, 1)
    labels[:, -1] = -100
    tiny_model.eval()
    with torch.no_grad():
        out = tiny_model.loss(tokens, labels, seq_aux_alpha=0.0, mtp_lambda=1.0)
        h = tiny_model.hidden(tokens)
        # Module 1 at positions 0..T-3 reads t_{i+1} and must predict t_{i+2}.
        logits, _ = tiny_model.mtp_draft(h[:, : T - 2], tokens[:, 1 : T - 1], depth=1)
        manual = F.cross_entropy(logits.flatten(0, 1), tokens[:, 2:].flatten())
        off_by_one = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1 : T - 1].flatten())
    terms = model_terms(tiny_args, T) + tiny_args.vocab_size + B * T
    assert_close(out.mtp_loss, manual, terms=terms)
    assert not torch.allclose(out.mtp_loss, off_by_one, **tolerances(manual, terms))
