"""MLA: RoPE layout, latent cache (absorbed form) against the training path, document masking."""

from __future__ import annotations

import torch

from crawl2score.model.attention import KVCache
from crawl2score.model.layers import apply_rope, rope_cos_sin
from tests.tolerance import assert_close, model_terms, tolerances


def test_rope_is_interleaved_complex_rotation(tiny_args):
    cos, sin = rope_cos_sin(tiny_args)
    x = torch.randn(2, 5, 3, tiny_args.qk_rope_head_dim)
    out = apply_rope(x, cos[:5], sin[:5])
    z = torch.view_as_complex(x.reshape(2, 5, 3, -1, 2))
    rot = torch.polar(torch.ones_like(cos[:5]), torch.atan2(sin[:5], cos[:5]))[None, :, None]
    ref = torch.view_as_real(z * rot).flatten(-2)
    assert_close(out, ref, terms=4)  # one complex product: 2 products + 1 sum per component


def test_cache_equals_no_cache(tiny_model, tiny_args):
    model = tiny_model.eval()
    tokens = torch.randint(0, tiny_args.vocab_size, (2, 20))
    with torch.no_grad():
        ref = model(tokens)
        cache = KVCache(tiny_args, 2, 20)
        parts = [model(tokens[:, :7], 0, cache)]
        parts += [model(tokens[:, t : t + 1], t, cache) for t in range(7, 12)]
        parts.append(model(tokens[:, 12:], 12, cache))
    assert_close(torch.cat(parts, 1), ref, terms=model_terms(tiny_args, 20))
    # The cache is the latent and rope key only: kv_lora_rank + qk_rope_head_dim values per token.
    assert cache.kv_BSC[0].shape[-1] + cache.pe_BSR[0].shape[-1] == tiny_args.kv_lora_rank + tiny_args.qk_rope_head_dim


def test_doc_mask_isolates_documents(tiny_model, tiny_args):
    model = tiny_model.eval()
    a = torch.randint(0, tiny_args.vocab_size, (1, 6))
    b = torch.randint(0, tiny_args.vocab_size, (1, 9))
    packed = torch.cat([a, b], 1)
    doc = torch.tensor([[0] * 6 + [1] * 9])
    with torch.no_grad():
        out = model(packed, doc_ids_BT=doc)
        alone_a, alone_b = model(a), model(b)
        leaky = model(packed)
    terms = model_terms(tiny_args, 15)
    assert_close(out[:, :6], alone_a, terms=terms)
    # RoPE is relative, so document b at offset 6 matches b alone.
    assert_close(out[:, 6:], alone_b, terms=terms)
    assert not torch.allclose(leaky[:, 6:], alone_b, **tolerances(alone_b, terms))
