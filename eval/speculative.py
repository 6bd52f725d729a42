"""MTP self-speculative decoding: the MTP module drafts the next token, the main model verifies it.

DeepSeek-V3 (§2.2, §5.4.3) trains one MTP module that predicts the token after next and suggests using it
for speculative decoding; the report measures 85-90% acceptance of the second token and a 1.8x TPS gain.
Here, for greedy decoding of one sequence:

    pending t_p (emitted, not yet in the main model's cache), draft d (MTP's guess of t_{p+1})
    main model on [t_p, d] at positions p, p+1 -> n1 = argmax at p  (the true t_{p+1})
      n1 == d: also n2 = argmax at p+1 (the true t_{p+2}); emit n1, n2  (two tokens, one main pass)
      n1 != d: emit n1                                                 (one token,  one main pass)
    MTP at positions p (and p+1) on (main hidden, next token) -> the next draft

Every emitted token is the main model's own argmax given the true prefix, so the text is the plain greedy
text (up to float ties: the verify pass computes two positions at once). The cache entry of a rejected
draft is simply overwritten by the next pass. The MTP module's own attention reads slot n_layers of the
same latent cache, filled for the prompt in the prefill.

Legend: B batch (1 here), T sequence, V vocabulary, D model dim.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from crawl2score.eval.decoding import Generation, decode
from crawl2score.model.attention import KVCache


@torch.inference_mode()
def speculative_greedy_one(
    model,
    prompt: Sequence[int],
    max_new_tokens: int,
    *,
    eos_id: int | None = None,
    stop: Callable[[list[int]], bool] | None = None,
) -> tuple[Generation, dict[str, int]]:
    """Greedy continuation of one prompt with MTP drafting. Returns the generation and counters."""
    device = model.rope_cos.device
    P = len(prompt)
    total = P + max_new_tokens + 1  # the verify pass may write one position past the last emitted token
    cache = KVCache(model.args, 1, total, device=device, dtype=model.embed.weight.dtype)
    prompt_1T = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    stats = {"main_passes": 1, "drafted": 0, "accepted": 0}

    h_1TD = model.hidden(prompt_1T, 0, cache)
    first = int(model.head(h_1TD[:, -1]).argmax(-1))
    out = [first]

    def finished() -> str | None:
        if eos_id is not None and out[-1] == eos_id:
            return "eos"
        if stop is not None and stop(out):
            return "stop"
        if len(out) >= max_new_tokens:
            return "length"
        return None

    reason = finished()
    if reason:
        return Generation(out, reason), stats
    # MTP prefill: position i pairs the main hidden h_i with token t_{i+1}; the last predicts t_{P+1}.
    nxt_1T = torch.cat([prompt_1T[:, 1:], torch.tensor([[first]], device=device)], dim=1)
    mtp_logits, _ = model.mtp_draft(h_1TD, nxt_1T, 1, 0, cache)
    draft = int(mtp_logits[0, -1].argmax())
    p = P  # position of the pending token out[-1]
    while True:
        h_12D = model.hidden(torch.tensor([[out[-1], draft]], device=device), p, cache)
        logits_12V = model.head(h_12D).float()
        stats["main_passes"] += 1
        stats["drafted"] += 1
        n1 = int(logits_12V[0, 0].argmax())
        new = [n1]
        if n1 == draft:
            stats["accepted"] += 1
            new.append(int(logits_12V[0, 1].argmax()))
        for tok in new:
            out.append(tok)
            reason = finished()
            if reason:
                return Generation(out, reason), stats
        mtp_logits, _ = model.mtp_draft(h_12D[:, : len(new)], torch.tensor([new], device=device), 1, p, cache)
        draft = int(mtp_logits[0, -1].argmax())
        p += len(new)


def speculative_decode(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    eos_id: int | None = None,
    stop: Callable[[int, list[int]], bool] | None = None,
) -> tuple[list[Generation], dict[str, int]]:
    """Greedy generation of each prompt in turn (drafts diverge per row, so rows run one at a time).

    Falls back to plain greedy when the model has no MTP module or the verify pass would not fit.
    """
    totals = {"main_passes": 0, "drafted": 0, "accepted": 0, "tokens": 0}
    gens = []
    for b, prompt in enumerate(prompts):
        if model.args.n_mtp_layers < 1 or len(prompt) + max_new_tokens + 1 > model.args.max_seq_len:
            (g,) = decode(
                model, [prompt], max_new_tokens, eos_id=eos_id, stop=(lambda _r, t, b=b: stop(b, t)) if stop else None
            )
            totals["main_passes"] += len(g.tokens)
        else:
            g, s = speculative_greedy_one(
                model, prompt, max_new_tokens, eos_id=eos_id, stop=(lambda t, b=b: stop(b, t)) if stop else None
            )
            for k, v in s.items():
                totals[k] += v
        totals["tokens"] += len(g.tokens)
        gens.append(g)
    return gens, totals
