"""Expert parallelism: the routed experts of every MoE layer sharded over the ranks of a process group.

DeepSeek-V3 (§3.2) trains with 64-way EP over 8 nodes; torchtitan and Megatron-Core ship the same
dispatch: each rank routes its own tokens with the full (replicated) router, sends every token copy to
the rank that holds its expert with one all-to-all of variable splits, runs its local experts on what it
received, and sends the outputs back with the reverse all-to-all; the shared experts stay local. Rank p
of an EP group of size P holds experts [p·E/P, (p+1)·E/P), so with `n_expert_groups` a multiple of P the
expert groups map onto EP ranks and group-limited routing (`n_limited_groups`) bounds how many ranks a
token reaches; `take_fanout` reports the measured figure.

Everything else is untouched: the router runs on local tokens (its balancing counts cover all E experts
and `update_expert_bias` all-reduces them over the world, so the bias update stays global), and the
gradients of the local expert weights arrive through the autograd of the all-to-all. Used through
`shard_experts(model, group)`; `torch.distributed._functional_collectives` gives the differentiable
all-to-all (what torchtitan uses).

Legend: N tokens on this rank, K experts per token, M = N·K token copies, R copies received, E routed
experts, El = E/P local experts, P EP ranks, D model dim.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._functional_collectives import all_to_all_single_autograd

from crawl2score.errors import BadInput
from crawl2score.model.moe import Experts, MoE, _autocast_dtype, grouped_mm_supported


@dataclass
class EPShard:
    """Where one Experts module's shard sits: the group, this rank's place in it, its expert range."""

    group: dist.ProcessGroup
    rank: int
    size: int
    first: int  # global id of the first local expert
    n_local: int


def shard_experts(
    model: nn.Module, group: dist.ProcessGroup | None = None, optimizer: torch.optim.Optimizer | None = None
) -> int:
    """Keep only this rank's slice of every MoE layer's routed experts, in place: the Parameter objects
    stay (an optimizer built on them stays valid) and their AdamW moments, if any, are sliced alike.
    Build (and resume) the full model the same way on every rank first. Returns the local expert count."""
    group = group or dist.group.WORLD
    size, rank = dist.get_world_size(group), dist.get_rank(group)
    n_local = 0
    for m in model.modules():
        if not isinstance(m, MoE):
            continue
        E = m.args.n_routed_experts
        if E % size:
            raise BadInput(f"{E} routed experts do not split over {size} expert-parallel ranks")
        n_local = E // size
        first = rank * n_local
        ex = m.experts
        for p in (ex.w1, ex.w2, ex.w3):
            p.data = p.data[first : first + n_local].clone()
            state = optimizer.state.get(p, {}) if optimizer is not None else {}
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key] = state[key][first : first + n_local].clone()
        ex.ep = EPShard(group, rank, size, first, n_local)
        ex.register_buffer("ep_fanout", torch.zeros(2, device=ex.w1.device), persistent=False)
    return n_local


def _expert_params(model: nn.Module) -> list[tuple[EPShard, nn.Parameter]]:
    return [
        (m.experts.ep, p)
        for m in model.modules()
        if isinstance(m, MoE) and getattr(m.experts, "ep", None) is not None
        for p in (m.experts.w1, m.experts.w2, m.experts.w3)
    ]


def _gather(t: torch.Tensor, ep: EPShard) -> torch.Tensor:
    parts = [torch.empty_like(t) for _ in range(ep.size)]
    dist.all_gather(parts, t.contiguous(), group=ep.group)
    return torch.cat(parts)


@contextlib.contextmanager
def gathered_experts(model: nn.Module, optimizer: torch.optim.Optimizer):
    """Full expert weights and moments on every rank for the duration (a collective): checkpoints always
    hold the whole model, so a run resumes with any expert-parallel size (or none) and sheds its slice."""
    saved = []
    for ep, p in _expert_params(model):
        state = optimizer.state.get(p, {})
        local = (p.data, {k: state[k] for k in ("exp_avg", "exp_avg_sq") if k in state})
        saved.append((p, state, local))
        p.data = _gather(p.data, ep)
        for k, v in local[1].items():
            state[k] = _gather(v, ep)
    try:
        yield
    finally:
        for p, state, (data, moments) in saved:
            p.data = data
            state.update(moments)


def reduce_expert_grads(model: nn.Module, world_size: int, replica_group: dist.ProcessGroup | None) -> None:
    """Expert gradients to the global mean: the all-to-all already summed the contributions of this EP
    group's ranks; sum over the replicas of the same slice (other EP groups), then divide by the world
    size, as DDP's averaging does for the other weights (the loss is scaled by the world size)."""
    for _ep, p in _expert_params(model):
        if p.grad is None:
            continue
        if replica_group is not None:
            dist.all_reduce(p.grad, group=replica_group)
        p.grad.div_(world_size)


def clip_grad_norm_ep_(model: nn.Module, max_norm: float, ep_group: dist.ProcessGroup) -> torch.Tensor:
    """Clip to `max_norm` over the whole model's gradient: the replicated weights' norm plus the expert
    slices' squared norms summed over the EP group (each rank holds different experts)."""
    experts = {id(p) for _ep, p in _expert_params(model)}
    params = list(model.parameters())
    dense = [p.grad for p in params if p.grad is not None and id(p) not in experts]
    local = [p.grad for p in params if p.grad is not None and id(p) in experts]
    zero = torch.zeros((), device=local[0].device if local else "cpu")
    d = torch.nn.utils.get_total_norm(dense, foreach=True) if dense else zero
    if hasattr(d, "full_tensor"):  # FSDP2: DTensor gradients, reduced across ranks first
        d = d.full_tensor()
    e2 = torch.nn.utils.get_total_norm(local, foreach=True) ** 2 if local else zero.clone()
    dist.all_reduce(e2, group=ep_group)
    total = (d**2 + e2).sqrt()
    if max_norm > 0:  # two calls: foreach cannot mix DTensor and plain gradients
        torch.nn.utils.clip_grads_with_norm_([p for p in params if id(p) not in experts], max_norm, total)
        torch.nn.utils.clip_grads_with_norm_([p for p in params if id(p) in experts], max_norm, total)
    return total


def expert_parallel_groups(world_size: int, size: int) -> tuple[dist.ProcessGroup, dist.ProcessGroup | None]:
    """(this rank's EP group, its replica group): EP groups are blocks of `size` consecutive ranks (one
    node's GPUs first), replica groups the ranks at the same place in each block. Every rank creates
    every group, as `new_group` requires."""
    if size < 1 or world_size % size:
        raise BadInput(f"train.expert_parallel {size} does not divide the {world_size} ranks")
    rank = dist.get_rank()
    ep_group = replicas = None
    for start in range(0, world_size, size):
        g = dist.new_group(list(range(start, start + size)))
        if start <= rank < start + size:
            ep_group = g
    if world_size > size:
        for offset in range(size):
            g = dist.new_group(list(range(offset, world_size, size)))
            if rank % size == offset:
                replicas = g
    return ep_group, replicas


def is_expert_param(name: str) -> bool:
    """Sharded parameters: they take no part in data-parallel gradient averaging over the EP group."""
    return ".experts." in name


def _all_to_all(x: torch.Tensor, out_splits: list[int], in_splits: list[int], group) -> torch.Tensor:
    y = all_to_all_single_autograd(x.contiguous(), out_splits, in_splits, group)
    return y.wait() if hasattr(y, "wait") else y


def dispatch_and_combine(
    ex: Experts,
    x_ND: torch.Tensor,
    idx_NK: torch.Tensor,
    gate_NK: torch.Tensor,
    counts_E: torch.Tensor,
    base_ND: torch.Tensor,
) -> torch.Tensor:
    """`Experts.forward` under EP: base_ND + Σ_k gate·expert(x) with the experts on other ranks."""
    ep: EPShard = ex.ep
    P, El = ep.size, ep.n_local
    K = idx_NK.shape[1]
    order_M = idx_NK.flatten().argsort(stable=True)  # copies sorted by expert, hence by owner rank
    token_M = order_M // K
    x_MD = x_ND.index_select(0, token_M)
    gate_M = gate_NK.flatten().index_select(0, order_M)
    # Counts per (owner rank, local expert) out; per (source rank, local expert) in. Host lists: the
    # all-to-all takes its splits on the host (a sync on CUDA, as in torchtitan and Megatron).
    send_PE = counts_E.view(P, El)
    recv_PE = torch.empty_like(send_PE)
    dist.all_to_all_single(recv_PE, send_PE.contiguous(), group=ep.group)
    in_splits, out_splits = send_PE.sum(1).tolist(), recv_PE.sum(1).tolist()
    x_RD = _all_to_all(x_MD, out_splits, in_splits, ep.group)
    gate_R = _all_to_all(gate_M, out_splits, in_splits, ep.group)
    # Received rows come by source rank, then local expert: regroup them by local expert.
    local_R = torch.repeat_interleave(torch.arange(El, device=x_ND.device).repeat(P), recv_PE.flatten())
    order_R = local_R.argsort(stable=True)
    counts_El = recv_PE.sum(0)
    xs, gs = x_RD.index_select(0, order_R), gate_R.index_select(0, order_R)
    mm_dtype = _autocast_dtype(x_ND)
    if ex.use_grouped_mm and grouped_mm_supported(x_ND.device, mm_dtype):
        y_sorted = ex._grouped(xs.to(mm_dtype), counts_El, gs.to(mm_dtype))
    else:
        y_sorted = ex._loop(xs, counts_El, gs.to(xs.dtype))
    y_RD = y_sorted.index_select(0, order_R.argsort())  # back to arrival order
    y_MD = _all_to_all(y_RD, in_splits, out_splits, ep.group)
    if torch.is_grad_enabled() and ex.training:
        ranks_NK = (idx_NK // El).sort(dim=-1).values
        fanout_N = 1 + (ranks_NK[:, 1:] != ranks_NK[:, :-1]).sum(-1)
        ex.ep_fanout += torch.stack([fanout_N.sum().float(), torch.tensor(float(idx_NK.shape[0]))])
    return base_ND.index_add_(0, token_M, y_MD.to(base_ND.dtype))


@torch.no_grad()
def take_fanout(model: nn.Module) -> dict[str, float]:
    """Mean number of EP ranks a token's K copies went to, per MoE layer, since the last call (this
    rank's tokens); resets the counts."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, MoE) and getattr(m.experts, "ep", None) is not None:
            s, n = m.experts.ep_fanout.tolist()
            out[name] = s / n if n else 0.0
            m.experts.ep_fanout.zero_()
    return out
