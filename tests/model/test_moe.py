"""Router, experts and loss-free balancing (model/moe.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crawl2score.model import Transformer
from crawl2score.model.moe import Experts, MoE, Router, grouped_mm_supported, update_expert_bias
from tests.tolerance import approx, assert_close


def _router(args, seed=0):
    torch.manual_seed(seed)
    r = Router(args)
    torch.nn.init.normal_(r.weight, std=0.5)
    return r


def test_bias_changes_selection_not_gate_weights(tiny_args):
    r = _router(tiny_args)
    x = torch.randn(64, tiny_args.dim)
    idx0, w0, s0 = r(x)
    # A bias shift common to all experts changes nothing.
    r.expert_bias.fill_(0.3)
    idx1, w1, _ = r(x)
    assert torch.equal(idx0, idx1)
    assert_close(w1, w0, terms=tiny_args.n_activated_experts)  # normalised over the K chosen scores
    # A large bias on expert 5 makes every token pick it ...
    r.expert_bias.zero_()
    r.expert_bias[5] = 10.0
    idx2, w2, s2 = r(x)
    assert (idx2 == 5).any(dim=-1).all()
    assert not (idx0 == 5).any(dim=-1).all()
    # ... but the weights are the unbiased scores of the chosen experts, normalised, times route_scale.
    expected = s2.gather(1, idx2)
    expected = expected / expected.sum(-1, keepdim=True) * tiny_args.route_scale
    assert_close(w2, expected, terms=tiny_args.n_activated_experts)
    assert torch.equal(s0, s2)


def test_group_limit_honoured(tiny_args):
    args = tiny_args.replace(n_routed_experts=16, n_expert_groups=4, n_limited_groups=2, n_activated_experts=4)
    r = _router(args, seed=1)
    x = torch.randn(256, args.dim)
    idx, _, scores = r(x)
    per_group = args.n_routed_experts // args.n_expert_groups
    groups = idx // per_group
    assert all(len(set(row.tolist())) <= args.n_limited_groups for row in groups)
    # The kept groups are those with the best top-2 score sums.
    top2 = scores.view(256, 4, per_group).topk(2, dim=-1).values.sum(-1)
    best = top2.topk(2, dim=-1).indices
    for g_row, b_row in zip(groups, best, strict=True):
        assert set(g_row.tolist()) <= set(b_row.tolist())
    # Without the limit, some token would have used more groups.
    idx_free, _, _ = _router(args.replace(n_expert_groups=1, n_limited_groups=1), seed=1)(x)
    assert any(len(set(row.tolist())) > 2 for row in idx_free // per_group)


def test_router_under_bf16_autocast_equals_fp32():
    """V3's router shape at init scale (std 0.006, 256 experts, 8 groups of which 4, top-8): selection and
    gate weights under bf16 autocast are exactly the fp32 ones. The bf16-autocast linear the router used
    to run gives 4% of these tokens another expert set (checked too, so the case can tell)."""
    from crawl2score.model.presets import get_preset

    args = get_preset("deepseek-v3")
    torch.manual_seed(0)
    r = Router(args)
    torch.nn.init.normal_(r.weight, std=args.init_std)
    x = torch.randn(512, args.dim)
    idx32, w32, s32 = r(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        idx16, w16, s16 = r(x)
        unprotected = F.linear(x, r.weight)  # what autocast makes of an fp32 linear
    assert w16.dtype == s16.dtype == torch.float32
    assert torch.equal(idx16, idx32) and torch.equal(w16, w32) and torch.equal(s16, s32)
    idx_old, _, _ = r.select(unprotected)
    moved = (idx_old.sort(-1).values != idx32.sort(-1).values).any(-1).float().mean()
    assert moved > 0.01


def _moe(args, seed=0):
    torch.manual_seed(seed)
    m = MoE(args)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return m


def _terms(args, n_tokens: int = 1) -> int:
    """Reduction length behind an MoE output (x·w1, h·w2, the K + shared expert sum) and, with
    `n_tokens`, behind a weight gradient (a sum over the tokens routed to the expert)."""
    return args.dim + args.moe_inter_dim + args.n_activated_experts + args.n_shared_experts + n_tokens


def _reference(m: MoE, x_BTD):
    """Per-token dense computation: every token's K experts, no dropping."""
    x = x_BTD.reshape(-1, x_BTD.shape[-1])
    idx, w, _ = m.gate(x)
    out = m.shared(x).clone()
    for t in range(x.shape[0]):
        for k in range(idx.shape[1]):
            e = idx[t, k]
            h = F.silu(x[t] @ m.experts.w1[e].T) * (x[t] @ m.experts.w3[e].T)
            out[t] += w[t, k] * (h @ m.experts.w2[e].T)
    return out.view_as(x_BTD)


@pytest.fixture
def cpu_strategy():
    """Forces one CPU fast-path strategy: 'bmm' (padded bmm, with 2 intra-op threads so it is eligible)
    or 'grouped' (torch._grouped_mm on sorted tokens); restores the defaults afterwards."""
    threads = torch.get_num_threads()
    pad = Experts.cpu_bmm_max_pad

    def force(name: str) -> None:
        if name == "grouped" and not grouped_mm_supported(torch.device("cpu"), torch.float32):
            pytest.skip("torch._grouped_mm unavailable on CPU in this torch")
        torch.set_num_threads(max(threads, 2))
        Experts.cpu_bmm_max_pad = float("inf") if name == "bmm" else 0.0

    yield force
    torch.set_num_threads(threads)
    Experts.cpu_bmm_max_pad = pad


@pytest.mark.parametrize("strategy", ["bmm", "grouped", "loop"])
def test_moe_matches_per_token_reference(tiny_args, cpu_strategy, strategy):
    if strategy != "loop":
        cpu_strategy(strategy)
    m = _moe(tiny_args.replace(use_grouped_mm=strategy != "loop"))
    x = torch.randn(2, 8, tiny_args.dim)
    assert_close(m(x), _reference(m, x), terms=_terms(tiny_args))


@pytest.mark.parametrize("skewed", [False, True])
@pytest.mark.parametrize("strategy", ["bmm", "grouped"])
def test_fast_path_and_loop_agree_with_grads(tiny_args, cpu_strategy, strategy, skewed):
    """The fast path (padded bmm or grouped GEMM) equals the reference loop in output and every gradient,
    also when routing is skewed: experts with no token, padding slots far more than real rows."""
    cpu_strategy(strategy)
    a = _moe(tiny_args.replace(use_grouped_mm=True))
    b = _moe(tiny_args.replace(use_grouped_mm=False))
    if skewed:
        with torch.no_grad():
            a.gate.expert_bias[:2] = 10.0  # every token picks experts 0 and 1
    b.load_state_dict(a.state_dict())
    b.gate.expert_bias.copy_(a.gate.expert_bias)
    x_a = torch.randn(3, 16, tiny_args.dim, requires_grad=True)
    x_b = x_a.detach().clone().requires_grad_()
    ya, yb = a(x_a), b(x_b)
    if skewed:
        counts = torch.bincount(a.gate(x_a.reshape(-1, tiny_args.dim))[0].flatten(), minlength=8)
        assert (counts == 0).any()
    assert_close(ya, yb, terms=_terms(tiny_args))
    ya.sum().backward()  # .sum() gives the stride-0 gradient _grouped_mm alone would reject
    yb.sum().backward()
    # Gradients sum over every token routed to an expert, in a different order on each path: the
    # tolerance scales with the largest gradient compared (they reach ~80 here; a fixed atol=1e-6 failed
    # on AVX2 CPUs, where one w3 gradient element differed by 3.5e-6).
    n_tokens = x_a.shape[0] * x_a.shape[1]
    assert_close(x_a.grad, x_b.grad, terms=_terms(tiny_args, n_tokens), msg="input")
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert_close(pa.grad, pb.grad, terms=_terms(tiny_args, n_tokens), msg=n)


@pytest.mark.parametrize("strategy", ["bmm", "grouped", "loop"])
def test_every_strategy_runs_under_bf16_autocast(tiny_args, cpu_strategy, strategy):
    """The trainer's bf16 autocast on an fp32 model: each strategy runs forward and backward (grouped GEMM
    gets the autocast dtype by hand) and stays within bf16 rounding of the fp32 output."""
    if strategy != "loop":
        cpu_strategy(strategy)
    m = _moe(tiny_args.replace(use_grouped_mm=strategy != "loop")).train()
    x = torch.randn(2, 16, tiny_args.dim, requires_grad=True)
    ref = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    y.float().sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in m.experts.parameters())
    scale = ref.abs().max().item()
    torch.testing.assert_close(y.float(), ref, rtol=0.05, atol=0.02 * scale)


def test_padded_bmm_bounded_by_padding(tiny_args, cpu_strategy, monkeypatch):
    """Skewed routing past `cpu_bmm_max_pad` leaves padded bmm for the sorted path."""
    cpu_strategy("bmm")
    Experts.cpu_bmm_max_pad = 1.5
    m = _moe(tiny_args.replace(use_grouped_mm=True))
    with torch.no_grad():
        m.gate.expert_bias[:2] = 10.0
    calls = []
    monkeypatch.setattr(Experts, "_padded_bmm", lambda *a: calls.append(1))
    m(torch.randn(2, 8, tiny_args.dim))
    assert not calls


def test_counts_only_in_training_forward(tiny_args):
    m = _moe(tiny_args)
    x = torch.randn(2, 8, tiny_args.dim)
    m.eval()
    m(x)
    assert m.tokens_per_expert.sum() == 0
    m.train()
    m(x)
    assert m.tokens_per_expert.sum() == 2 * 8 * tiny_args.n_activated_experts
    with torch.no_grad():
        m(x)
    assert m.tokens_per_expert.sum() == 2 * 8 * tiny_args.n_activated_experts


def test_sequence_balance_loss_formula(tiny_args):
    m = _moe(tiny_args).train()
    x = torch.randn(2, 8, tiny_args.dim)
    m(x)
    E, K, T = tiny_args.n_routed_experts, tiny_args.n_activated_experts, 8
    idx, _, s = m.gate(x.reshape(-1, tiny_args.dim))
    losses = []
    for b in range(2):
        sel = idx.view(2, T, K)[b]
        f = torch.stack([(sel == i).sum() for i in range(E)]).float() * E / (K * T)
        sb = s.view(2, T, E)[b]
        p = (sb / sb.sum(-1, keepdim=True)).mean(0)
        losses.append((f * p).sum())
    assert_close(m.balance_loss, torch.stack(losses).mean(), terms=2 * T * E)


def test_update_expert_bias_sign_and_coverage(tiny_args):
    model = Transformer(tiny_args.replace(n_mtp_layers=1))
    moes = {n: m for n, m in model.named_modules() if isinstance(m, MoE)}
    assert any(n.startswith("mtp.") for n in moes)  # the MTP block's MoE is covered
    E = tiny_args.n_routed_experts
    load = torch.tensor([10.0, 0, 2, 2, 2, 2, 2, 4])[:E]
    for m in moes.values():
        m.tokens_per_expert.copy_(load)
    stats = update_expert_bias(model, gamma=0.01)
    assert set(stats) == set(moes)
    for name, m in moes.items():
        expected = 0.01 * torch.sign(load.mean() - load)
        assert_close(m.gate.expert_bias, expected, terms=1)
        assert m.tokens_per_expert.sum() == 0
        assert stats[name]["dead_experts"] == 1
        assert stats[name]["max_vio"] == approx(10 / load.mean().item() - 1, terms=E)
        assert stats[name]["tokens_per_expert"] == load.tolist()


def test_bias_update_balances_a_skewed_router(tiny_args):
    """Repeated updates pull the load toward the mean (Wang et al. 2024): MaxVio falls."""
    m = _moe(tiny_args.replace(n_expert_groups=1, n_limited_groups=1)).train()
    with torch.no_grad():
        m.gate.weight[0] += 1.0  # expert 0 is favoured by every token
    x = torch.randn(2, 32, tiny_args.dim)
    vios = []
    for _ in range(30):
        m(x)
        vios.append(update_expert_bias(m, gamma=0.05)[""]["max_vio"])
    assert vios[-1] < 0.5 * vios[0]


def test_balancing_buffers_stay_fp32_under_bf16_cast(tiny_args):
    m = _moe(tiny_args).to(torch.bfloat16)
    assert m.gate.expert_bias.dtype == torch.float32
    assert m.tokens_per_expert.dtype == torch.float32
    assert m.experts.w1.dtype == torch.bfloat16
    m.train()
    y = m(torch.randn(2, 4, tiny_args.dim, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16


def test_activation_checkpointing_does_not_double_count(tiny_args):
    m = _moe(tiny_args).train()
    x = torch.randn(2, 8, tiny_args.dim, requires_grad=True)
    y = torch.utils.checkpoint.checkpoint(m, x, use_reentrant=False)
    y.square().sum().backward()
    assert m.tokens_per_expert.sum() == 2 * 8 * tiny_args.n_activated_experts


@pytest.mark.parametrize("shared_expert", [True, False])
def test_decode_path_equals_reference_loop(tiny_args, shared_expert):
    """The CPU decode path (autograd off, at most E token copies: one SwiGLU per active expert) gives the
    reference loop's output, also when two tokens share an expert."""
    args = tiny_args.replace(use_grouped_mm=False, n_shared_experts=1 if shared_expert else 0)
    m = _moe(args)
    for n_tokens in (1, 2, 4):  # M = N·K copies <= E = 8
        x = torch.randn(1, n_tokens, args.dim)
        with torch.no_grad():
            fast = m(x)
        with torch.enable_grad():  # grad mode on: the batched reference loop runs
            ref = m(x.requires_grad_())
        assert_close(fast, ref.detach(), terms=_terms(args))
        if shared_expert:
            assert_close(fast, _reference(m, x.detach()), terms=_terms(args))
    with torch.no_grad():  # the path is taken and handles a shared expert between tokens
        x = torch.randn(4, args.dim)
        idx = torch.tensor([[0, 3], [3, 5], [0, 7], [1, 2]])
        gate = torch.rand(4, 2)
        counts = torch.zeros(8, dtype=torch.long).scatter_add_(0, idx.flatten(), torch.ones(8, dtype=torch.long))
        fast = m.experts(x, idx, gate, counts, torch.zeros_like(x))
        ref = m.experts._loop(
            x.index_select(0, idx.flatten().argsort(stable=True) // 2),
            counts,
            gate.flatten()[idx.flatten().argsort(stable=True)],
        )
        expected = torch.zeros_like(x).index_add_(0, idx.flatten().argsort(stable=True) // 2, ref)
        assert_close(fast, expected, terms=_terms(args))
