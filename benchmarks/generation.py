"""Generation figures: KV cache speed-up, latent cache size against MHA, MTP speculative decoding.

    python benchmarks/generation.py [--new-tokens 512] [--prompt 64] [--batch 1] [--json out.json]

1. Tokens/s of `model.generate.generate` with the latent KV cache and without it (the whole sequence
   recomputed each step), greedy, on a random `tiny` model (goal: >= 5x at 512 new tokens). Each at
   generate's defaults (cached steps on one intra-op thread on CPU, the uncached reference on torch's
   setting), and the uncached one again on one thread, so the speed-up is also given thread for thread;
   the cached one again with torch's thread setting (`decode_threads=None`) shows what the one-thread
   decode policy is worth on the machine at hand.
2. Cache bytes per token: MLA keeps kv_lora_rank + qk_rope_head_dim values per layer; multi-head
   attention with the same heads keeps 2 * n_heads * v_head_dim (goal: <= 1/10). Shown for the presets,
   from `model.info.model_info` (the figures `crawl2score model-info` prints).
3. MTP self-speculative greedy decoding (`eval.speculative`) against plain cached greedy: acceptance rate,
   main-model passes per token, wall-clock speed-up. A random model's MTP drafts are rarely right, so the
   acceptance measured here is a floor; a trained checkpoint (`--checkpoint`) gives the real figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crawl2score.eval.decoding import decode  # noqa: E402
from crawl2score.eval.speculative import speculative_decode  # noqa: E402
from crawl2score.model import Transformer, get_preset, load_checkpoint  # noqa: E402
from crawl2score.model.generate import generate  # noqa: E402
from crawl2score.model.info import model_info  # noqa: E402
from crawl2score.model.presets import PRESETS  # noqa: E402


def cache_bytes_per_token(args, dtype_bytes: int = 2) -> dict[str, float]:
    """`crawl2score model-info`'s figures: latent (C + R per layer) against MHA's 2·H·d_v per layer."""
    info = model_info(args, dtype_bytes)
    mla, mha = info["kv_cache_bytes_per_token"], info["kv_cache_bytes_per_token_mha"]
    return {"mla_bytes": mla, "mha_bytes": mha, "ratio": mla / mha}


def timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--spec-new-tokens", type=int, default=256)
    ap.add_argument("--checkpoint", default=None, help="a trained checkpoint (default: random tiny)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.manual_seed(0)
    if a.checkpoint:
        model = load_checkpoint(a.checkpoint)
    else:
        args = get_preset("tiny")
        args.vocab_size = 4096
        args.max_seq_len = a.prompt + a.new_tokens + 2
        model = Transformer(args).eval()
    V = model.args.vocab_size
    prompts = [torch.randint(3, V, (a.prompt,)).tolist() for _ in range(a.batch)]
    n = a.new_tokens
    generate(model, prompts, 4)  # warm-up
    t_cache = timed(lambda: generate(model, prompts, n))
    t_cache_threads = timed(lambda: generate(model, prompts, n, decode_threads=None))
    t_plain = timed(lambda: generate(model, prompts, n, use_cache=False))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t_plain_1 = timed(lambda: generate(model, prompts, n, use_cache=False))
    torch.set_num_threads(threads)
    out = {
        "machine": "2-core CPU",
        "intra_op_threads": threads,
        "load_average": list(os.getloadavg()),
        "model": a.checkpoint or "random tiny (vocab 4096)",
        "prompt_tokens": a.prompt,
        "new_tokens": n,
        "batch": a.batch,
        "kv_cache_tokens_per_s": a.batch * n / t_cache,
        "kv_cache_torch_threads_tokens_per_s": a.batch * n / t_cache_threads,
        "no_cache_tokens_per_s": a.batch * n / t_plain,
        "no_cache_1_thread_tokens_per_s": a.batch * n / t_plain_1,
    }
    out["kv_cache_speedup"] = t_plain / t_cache
    out["kv_cache_speedup_1_thread_both"] = t_plain_1 / t_cache
    out["cache_bytes_per_token_bf16"] = {name: cache_bytes_per_token(PRESETS[name]()) for name in sorted(PRESETS)}
    m = a.spec_new_tokens
    spec_prompts = prompts[:1]
    t_greedy = timed(lambda: decode(model, spec_prompts, m))
    t_spec = timed(lambda: speculative_decode(model, spec_prompts, m))
    gens, stats = speculative_decode(model, spec_prompts, m)
    same = gens[0].tokens == decode(model, spec_prompts, m)[0].tokens
    out["speculative"] = {
        "new_tokens": m,
        "identical_to_greedy": same,
        "acceptance_rate": stats["accepted"] / max(stats["drafted"], 1),
        "tokens_per_main_pass": stats["tokens"] / max(stats["main_passes"], 1),
        "speedup_wall_clock": t_greedy / t_spec,
    }
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
