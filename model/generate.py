"""Batched autoregressive generation with the absorbed-MLA latent cache.

Prompts of different lengths are left-padded; each row's positions start at 0 at its first real token
and padded keys are never attended, so a prompt's continuation does not depend on what it is batched
with. With `use_cache=False` the whole sequence is recomputed each step through the training path
(naive MLA) -- the reference the cache is tested against.

The decode loop reads nothing back to the host per step (tokens stay in `tokens_BT`; the rows are cut at
their EOS once at the end), except the every-row-done check, made each step on CPU (free) and every
`_DONE_CHECK_EVERY` steps on an accelerator. On CPU the cached single-token steps run with
`decode_threads` intra-op threads (default 1): a step is a few hundred kernels on vectors of a few
hundred values, none worth splitting, and on a shared machine every parallel region waits for a
descheduled thread (BENCHMARKS.md: ~27x slower per token on 2 threads than on 1 at load 5; about even
when the machine is quiet).

Legend: B batch, T sequence, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from crawl2score.model.attention import KVCache
from crawl2score.model.model import Transformer

# On an accelerator, look at the every-row-done flag (a host sync) once per this many steps.
_DONE_CHECK_EVERY = 16


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` intra-op threads (process-wide; restored after). None: leave torch's setting."""
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


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


@dataclass
class Batch:
    """Left-padded prompts with room for the continuation, and their cache (None without one)."""

    tokens_BT: torch.Tensor
    real_BT: torch.Tensor  # False on padding
    pos_BT: torch.Tensor  # positions counted from each row's first real token
    prompt_len: int
    total: int
    cache: KVCache | None


def prepare_batch(
    model: Transformer, prompts: Sequence[Sequence[int]], max_new_tokens: int, use_cache: bool = True
) -> Batch:
    """Validate and left-pad prompts; every decoding loop (ours, evaluation's, speculative) starts here."""
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
        tokens_BT[b, P - len(p) : P] = torch.tensor(list(p), dtype=torch.long)
    real_BT = torch.arange(total, device=device)[None] >= pads_B[:, None]
    pos_BT = (torch.arange(total, device=device)[None] - pads_B[:, None]).clamp_min(0)
    cache = None
    if use_cache:
        cache = KVCache(model.args, B, total, device=device, dtype=model.embed.weight.dtype)
        cache.valid_BS.copy_(real_BT)
        cache.pos_offset_B.copy_(pads_B)
    return Batch(tokens_BT, real_BT, pos_BT, P, total, cache)


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
    decode_threads: int | None = 1,
) -> list[list[int]]:
    """Continue each prompt by up to max_new_tokens; returns the new tokens only (eos included, then
    the row stops). Prompts must be non-empty and fit, with the continuation, in max_seq_len.
    `decode_threads`: intra-op threads for the cached steps after the prompt on CPU (None: unchanged)."""
    batch = prepare_batch(model, prompts, max_new_tokens, use_cache=use_cache)
    device, B, P, total = batch.tokens_BT.device, len(prompts), batch.prompt_len, batch.total
    tokens_BT, real_BT, pos_BT, cache = batch.tokens_BT, batch.real_BT, batch.pos_BT, batch.cache
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    if max_new_tokens <= 0:
        return [[] for _ in range(B)]
    was_training = model.training
    model.eval()
    done_B = torch.zeros(B, dtype=torch.bool, device=device)
    n_new_B = torch.zeros(B, dtype=torch.long, device=device)  # tokens kept per row (up to its eos)
    check_every = 1 if device.type == "cpu" else _DONE_CHECK_EVERY

    def step(t: int, start: int) -> bool:
        """Append token t; True when every row has stopped."""
        if use_cache:
            logits_BTV = model(tokens_BT[:, start:t], start_pos=start, cache=cache)
        else:  # pads form their own "document" so real tokens never attend to them
            logits_BTV = model(tokens_BT[:, :t], doc_ids_BT=real_BT[:, :t].long(), pos_BT=pos_BT[:, :t])
        next_B = sample_next(logits_BTV[:, -1], temperature, top_p, generator)
        tokens_BT[:, t] = next_B
        n_new_B.add_(~done_B)
        if eos_id is None:
            return False
        done_B.logical_or_(next_B == eos_id)
        return (t - P + 1) % check_every == 0 and bool(done_B.all())

    try:
        stopped = step(P, 0)  # the prompt (the prefill keeps torch's thread setting)
        threads = decode_threads if use_cache and device.type == "cpu" else None
        with intra_op_threads(threads):
            for t in range(P + 1, total):
                if stopped:
                    break
                stopped = step(t, t - 1)
    finally:
        model.train(was_training)
    return [row[:n] for row, n in zip(tokens_BT[:, P:].tolist(), n_new_B.tolist(), strict=True)]
