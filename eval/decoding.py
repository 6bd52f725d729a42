"""Batched, KV-cached decoding for evaluation: stop strings, per-row seeds, and why each row stopped.

`model.generate.generate` is the reference loop; this one adds what lm-eval's `generate_until` needs:
rows stop on `until` strings (checked on the decoded tail every step) as well as on EOS, the loop ends as
soon as every row is done, and each row samples from its own seeded generator, so a sample does not
depend on which other requests share its batch (a seed reproduces the same text at any batch size).

Legend: B batch, T sequence, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch

from crawl2score.model.generate import intra_op_threads, prepare_batch, sample_next


@dataclass
class Generation:
    tokens: list[int]
    finish: str  # "eos", "stop" (an until string) or "length"


def make_generators(seeds: Sequence[int | None], device) -> list[torch.Generator | None]:
    return [None if s is None else torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def sample_rows(
    logits_BV: torch.Tensor, temperature: float, top_p: float, generators: Sequence[torch.Generator | None]
) -> torch.Tensor:
    """Greedy for the whole batch at temperature 0, else one nucleus draw per row from its own generator."""
    if temperature <= 0:
        return logits_BV.argmax(dim=-1)
    return torch.stack([sample_next(logits_BV[b : b + 1], temperature, top_p, g)[0] for b, g in enumerate(generators)])


@torch.inference_mode()
def decode(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seeds: Sequence[int | None] | None = None,
    eos_id: int | None = None,
    stop: Callable[[int, list[int]], bool] | None = None,
) -> list[Generation]:
    """Continue each prompt by up to `max_new_tokens`. `stop(row, new_tokens)` ends a row early.

    Tokens after a row's end are not returned (the EOS itself is kept, as in `model.generate`).
    """
    B = len(prompts)
    batch = prepare_batch(model, prompts, max_new_tokens)
    tokens_BT, cache, P, total = batch.tokens_BT, batch.cache, batch.prompt_len, batch.total
    generators = make_generators(seeds if seeds is not None else [None] * B, tokens_BT.device)
    out: list[list[int]] = [[] for _ in range(B)]
    finish = ["length"] * B
    done = [False] * B
    cur = 0
    # Cached single-token steps run on one intra-op thread on CPU, as in model.generate (see its docstring);
    # the prompt prefill keeps torch's setting.
    decode_threads = 1 if tokens_BT.device.type == "cpu" else None
    with ExitStack() as stack:
        for t in range(P, total):
            if t == P + 1:
                stack.enter_context(intra_op_threads(decode_threads))
            logits_BTV = model(tokens_BT[:, cur:t], start_pos=cur, cache=cache)
            cur = t
            next_B = sample_rows(logits_BTV[:, -1], temperature, top_p, generators)
            tokens_BT[:, t] = next_B
            for b in range(B):
                if done[b]:
                    continue
                tok = int(next_B[b])
                out[b].append(tok)
                if eos_id is not None and tok == eos_id:
                    done[b], finish[b] = True, "eos"
                elif stop is not None and stop(b, out[b]):
                    done[b], finish[b] = True, "stop"
            if all(done):
                break
    return [Generation(o, f) for o, f in zip(out, finish, strict=True)]


def until_checker(decode_fn: Callable[[list[int]], str], until: Sequence[str]) -> Callable[[int, list[int]], bool]:
    """A `stop` callback: does the decoded tail of the new tokens contain one of the `until` strings?

    Only the last few tokens are decoded each step (enough to span the longest stop string, since every
    token decodes to at least one character or a partial byte), so the check stays O(1) per token.
    """
    until = [u for u in until if u]
    if not until:
        return lambda b, toks: False
    window = 2 * max(len(u) for u in until) + 4

    def check(_b: int, toks: list[int]) -> bool:
        tail = decode_fn(toks[-window:])
        return any(u in tail for u in until)

    return check
