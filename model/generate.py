"""Batched autoregressive generation with the absorbed-MLA latent cache.

Prompts of different lengths are left-padded; each row's positions start at 0 at its first real token
and padded keys are never attended, so a prompt's continuation does not depend on what it is batched
with. With `use_cache=False` the whole sequence is recomputed each step through the training path
(naive MLA) -- the reference the cache is tested against.

Legend: B batch, T sequence, V vocabulary.
"""

from __future__ import annotations

import torch

from model.attention import KVCache
from model.model import Transformer


def sample_next(
    logits_BV: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Greedy at temperature 0; otherwise nucleus sampling (Holtzman et al. 2020) at `temperature`."""
    if temperature <= 0:
        return logits_BV.argmax(dim=-1)
    probs_BV = torch.softmax(logits_BV.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_BV, order_BV = probs_BV.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always survives).
        drop_BV = sorted_BV.cumsum(dim=-1) - sorted_BV > top_p
        sorted_BV = sorted_BV.masked_fill(drop_BV, 0.0)
        probs_BV = torch.zeros_like(probs_BV).scatter_(-1, order_BV, sorted_BV)
    return torch.multinomial(probs_BV, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate(
    model: Transformer,
    prompts: list[list[int]],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
) -> list[list[int]]:
    """Continue each prompt by up to max_new_tokens; returns the new tokens only (eos included, then
    the row stops). Prompts must be non-empty and fit, with the continuation, in max_seq_len."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty token lists")
    device = model.rope_cos.device
    B, P = len(prompts), max(len(p) for p in prompts)
    total = P + max_new_tokens
    if total > model.args.max_seq_len:
        raise ValueError(f"prompt + new tokens = {total} exceeds max_seq_len {model.args.max_seq_len}")
    pads_B = torch.tensor([P - len(p) for p in prompts], device=device)
    tokens_BT = torch.zeros(B, total, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        tokens_BT[b, P - len(p) : P] = torch.tensor(p, dtype=torch.long)
    real_BT = torch.arange(total, device=device)[None] >= pads_B[:, None]
    pos_BT = (torch.arange(total, device=device)[None] - pads_B[:, None]).clamp_min(0)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    cache = None
    if use_cache:
        cache = KVCache(model.args, B, total, device=device, dtype=model.embed.weight.dtype)
        cache.valid_BS.copy_(real_BT)
        cache.pos_offset_B.copy_(pads_B)
    done_B = torch.zeros(B, dtype=torch.bool, device=device)
    out: list[list[int]] = [[] for _ in range(B)]
    cur = 0
    for t in range(P, total):
        if use_cache:
            logits_BTV = model(tokens_BT[:, cur:t], start_pos=cur, cache=cache)
            cur = t
        else:  # pads form their own "document" so real tokens never attend to them
            logits_BTV = model(tokens_BT[:, :t], doc_ids_BT=real_BT[:, :t].long(), pos_BT=pos_BT[:, :t])
        next_B = sample_next(logits_BTV[:, -1], temperature, top_p, generator)
        tokens_BT[:, t] = next_B
        for b in range(B):
            if not done_B[b]:
                out[b].append(int(next_B[b]))
        if eos_id is not None:
            done_B |= next_B == eos_id
            if bool(done_B.all()):
                break
    model.train(was_training)
    return out
