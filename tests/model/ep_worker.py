"""Worker of tests/model/test_expert_parallel.py (run under torchrun, gloo): the same tiny model once whole
on the full batch and once with its experts sharded over the ranks, each rank on its share of the batch.
Writes OUT/rank<R>.json with the largest differences, each relative to the magnitude compared."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from crawl2score.model import Transformer, get_preset
from crawl2score.model.expert_parallel import is_expert_param, shard_experts, take_fanout
from crawl2score.model.moe import MoE

LOSS = {"seq_aux_alpha": 1e-2, "mtp_lambda": 0.3}


def build(args, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(args).train()
    with torch.no_grad():  # sharper than the 0.006 init, so routing is decided and gradients are visible
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.mul_(10.0)
    return model


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def main(out: Path, groups: int, limited: int) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    args = get_preset("tiny").replace(vocab_size=256, max_seq_len=64, n_expert_groups=groups, n_limited_groups=limited)
    tokens = torch.randint(0, 256, (2 * world, 33), generator=torch.Generator().manual_seed(1))
    ref = build(args)
    r = ref.loss(tokens[:, :-1], tokens[:, 1:], **LOSS)
    r.loss.backward()
    ref_counts = torch.stack([m.tokens_per_expert for m in ref.modules() if isinstance(m, MoE)])

    ep = build(args)
    n_local = shard_experts(ep)
    mine = tokens[2 * rank : 2 * rank + 2]
    o = ep.loss(mine[:, :-1], mine[:, 1:], **LOSS)
    n_global = tokens[:, 1:].numel()
    (o.loss * (o.n_tokens / n_global)).backward()
    loss = (o.loss.detach() * (o.n_tokens / n_global)).reshape(1)
    dist.all_reduce(loss)
    counts = torch.stack([m.tokens_per_expert for m in ep.modules() if isinstance(m, MoE)])
    dist.all_reduce(counts)
    worst = {"loss": rel(loss[0], r.loss.detach()), "counts": rel(counts, ref_counts)}
    full = dict(ref.named_parameters())
    for name, p in ep.named_parameters():
        g = p.grad
        if is_expert_param(name):  # this rank's slice of the full gradient, no reduction
            expected = full[name].grad[rank * n_local : (rank + 1) * n_local]
        else:
            dist.all_reduce(g)
            expected = full[name].grad
        worst[f"grad.{name}"] = rel(g, expected)
        if expected.abs().max() == 0:  # a vacuous comparison: make the test say so
            worst[f"zero-grad.{name}"] = 1.0
    fanout = take_fanout(ep)
    (out / f"rank{rank}.json").write_text(json.dumps({"worst": worst, "fanout": fanout, "n_local": n_local}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
