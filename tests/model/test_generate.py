"""Batched generation: cache equals recompute, rows independent of batching, seeded sampling."""

from __future__ import annotations

from model.generate import generate

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
