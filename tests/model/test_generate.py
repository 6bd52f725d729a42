"""Batched generation: cache equals recompute, rows independent of batching, seeded sampling."""

from __future__ import annotations

import torch

from crawl2score.model.attention import KVCache
from crawl2score.model.generate import generate
from tests.tolerance import assert_close, model_terms

PROMPTS = [[5, 6, 7, 8, 9], [17, 3], [40, 41, 42]]


def test_greedy_cached_equals_uncached_and_unbatched(tiny_model):
    cached = generate(tiny_model, PROMPTS, 6)
    assert cached == generate(tiny_model, PROMPTS, 6, use_cache=False)
    assert cached == [generate(tiny_model, [p], 6)[0] for p in PROMPTS]
    assert all(len(row) == 6 for row in cached)


def test_sampling_is_seeded(tiny_model):
    a = generate(tiny_model, PROMPTS, 6, temperature=1.0, top_p=0.9, seed=1)
    assert a == generate(tiny_model, PROMPTS, 6, temperature=1.0, top_p=0.9, seed=1)
    assert a != generate(tiny_model, PROMPTS, 6, temperature=1.0, top_p=0.9, seed=2)


def test_eos_stops_a_row(tiny_model):
    first = generate(tiny_model, PROMPTS[:1], 4)[0]
    out = generate(tiny_model, PROMPTS[:1], 4, eos_id=first[1])[0]
    assert out == first[:2]


def test_padded_batch_cached_logits_equal_uncached(tiny_model, tiny_args):
    """Left-padded rows through the absorbed attention (prefill mask, then single-query steps whose mask is
    a view of valid_BS) give the logits of each prompt run alone through the training path."""
    model = tiny_model.eval()
    rows = [torch.randint(0, tiny_args.vocab_size, (n,)) for n in (9, 4)]
    P, steps = 9, 5
    tokens = torch.zeros(2, P + steps, dtype=torch.long)
    for b, r in enumerate(rows):
        tokens[b, P - len(r) : P] = r
    tokens[:, P:] = torch.randint(0, tiny_args.vocab_size, (2, steps))
    cache = KVCache(tiny_args, 2, P + steps)
    pads = torch.tensor([0, P - len(rows[1])])
    cache.valid_BS.copy_(torch.arange(P + steps)[None] >= pads[:, None])
    cache.pos_offset_B.copy_(pads)
    with torch.no_grad():
        parts = [model(tokens[:, :P], 0, cache)[:, -1:]]
        parts += [model(tokens[:, t : t + 1], t, cache) for t in range(P, P + steps)]
        cached = torch.cat(parts, 1)
        for b in range(2):
            alone = model(tokens[b : b + 1, pads[b] :])[:, P - 1 - pads[b] :]
            assert_close(cached[b : b + 1], alone, terms=model_terms(tiny_args, P + steps))


def test_single_query_mask_is_the_general_mask(tiny_args):
    """A decode step's mask (a view of valid_BS) is the general one: causal, real keys, itself."""
    cache = KVCache(tiny_args, 2, 10)
    cache.valid_BS.copy_(torch.arange(10)[None] >= torch.tensor([[0], [3]]))
    for t in range(3, 10):
        k = torch.arange(t + 1)
        expected = (cache.valid_BS[:, : t + 1] | (k == t)[None])[:, None, None]
        assert torch.equal(cache.mask(t, 1), expected)


def test_decode_threads_restored_and_output_unchanged(tiny_model):
    threads = torch.get_num_threads()
    one = generate(tiny_model, PROMPTS, 6)
    assert torch.get_num_threads() == threads
    assert one == generate(tiny_model, PROMPTS, 6, decode_threads=None)
    assert generate(tiny_model, PROMPTS, 0) == [[], [], []]
