"""MTP self-speculative decoding gives exactly the plain greedy tokens."""

from __future__ import annotations

import torch

from crawl2score.eval.decoding import decode
from crawl2score.eval.speculative import speculative_decode


def _model(seed, **kw):
    from crawl2score.model import Transformer, get_preset

    torch.manual_seed(seed)
    args = get_preset("tiny")
    args.vocab_size = 64  # a small vocabulary: drafts are sometimes right, so both branches run
    for k, v in kw.items():
        setattr(args, k, v)
    return Transformer(args).eval()


def test_speculative_greedy_is_plain_greedy():
    model = _model(0)
    # Larger weights than the init make logits peaked: no float near-ties between the two paths.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8)
    prompts = [[1, 2, 3, 4, 5], list(range(10, 40)), [7]]
    ref = decode(model, prompts, 24)
    gens, stats = speculative_decode(model, prompts, 24)
    assert [g.tokens for g in gens] == [r.tokens for r in ref]
    assert stats["tokens"] == 72 and stats["drafted"] > 0
    assert stats["main_passes"] <= 72  # never more passes than tokens


def test_speculative_respects_eos_and_stop():
    model = _model(1)
    prompts = [[3, 1, 4, 1, 5]]
    ref = decode(model, prompts, 16)[0].tokens
    eos = ref[5]
    gens, _ = speculative_decode(model, prompts, 16, eos_id=eos)
    assert gens[0].tokens == ref[: ref.index(eos) + 1] and gens[0].finish == "eos"
    gens, _ = speculative_decode(model, prompts, 16, stop=lambda b, toks: len(toks) >= 3)
    assert gens[0].tokens == ref[:3] and gens[0].finish == "stop"


def test_without_mtp_it_falls_back_to_plain_decoding():
    model = _model(2, n_mtp_layers=0)
    gens, stats = speculative_decode(model, [[1, 2, 3]], 5)
    assert gens[0].tokens == decode(model, [[1, 2, 3]], 5)[0].tokens and stats["drafted"] == 0
