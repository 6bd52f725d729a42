"""DeepSeekMoE with auxiliary-loss-free balancing (DeepSeek-V3 §2.1.2, Wang et al. 2024).

The router scores experts in fp32 (sigmoid for V3, softmax for V2/V2-Lite), adds a per-expert bias for
*selection only*, limits each token to its best `n_limited_groups` groups (a group scores the sum of its
top-2 biased scores), picks the top-K experts, and weights them with the unbiased scores normalised over
the selection times `route_scale`. No token is dropped. The bias is not learnt by gradient: the MoE
layer only counts tokens per expert, and `update_expert_bias` (called by the trainer once per optimizer
step) moves it by γ·sign(mean load − load). The sequence-wise balance loss α·Σ f_i·P_i is the
complementary safeguard (V3 eq. 17-20).

Legend: B batch, T sequence, N tokens (B·T), D model dim, E routed experts, K experts per token,
G expert groups, F expert hidden width, M routed token copies (N·K, or padded to aligned blocks on CUDA),
C padded-bmm capacity (the largest expert's token count), P padded-bmm slots (E·C).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from crawl2score.model.config import ModelArgs
from crawl2score.model.layers import MLP

# Grouped GEMM on CUDA reads each expert's rows with aligned loads; pad every group to a multiple of this.
_CUDA_ALIGN_M = 16
_GROUPED_MM_OK: dict[tuple[str, torch.dtype], bool] = {}


def grouped_mm_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Probe torch._grouped_mm once per (device type, dtype): forward and backward on a tiny problem."""
    key = (device.type, dtype)
    if torch.compiler.is_compiling() and device.type != "cuda":
        # Inductor traces _grouped_mm through its meta kernel, which accepts bf16 only: keep it out of
        # compiled CPU graphs (the eager CPU kernel does run fp32).
        return False
    if key not in _GROUPED_MM_OK:
        ok = hasattr(torch, "_grouped_mm")
        if ok and device.type == "cuda":
            ok = dtype == torch.bfloat16 and torch.cuda.get_device_capability(device) >= (9, 0)
        if ok and not torch.compiler.is_compiling():
            try:
                # Own saved-tensor hooks: an enclosing activation checkpoint must not see the probe.
                hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)
                with torch.inference_mode(False), torch.enable_grad(), hooks:
                    # Constants, not randn: the probe runs at the first forward, and drawing from the
                    # global generator there would shift a resumed run's RNG stream against an
                    # uninterrupted one (which probed before its checkpoint).
                    x = torch.ones(32, 16, device=device, dtype=dtype, requires_grad=True)
                    w = torch.ones(2, 16, 16, device=device, dtype=dtype, requires_grad=True)
                    offs = torch.tensor([16, 32], dtype=torch.int32, device=device)
                    _gmm(x, w, offs).sum().backward()
            except (RuntimeError, NotImplementedError, TypeError):
                ok = False
        _GROUPED_MM_OK[key] = ok
    return _GROUPED_MM_OK[key]


def _autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls on `x` run in: autocast's when it is on for x's device, else x's own."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous: _grouped_mm's backward rejects
    expanded (stride-0) gradients such as the one `.sum()` produces."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g.contiguous()


def _gmm(x_NI: torch.Tensor, w_EOI: torch.Tensor, offs_E: torch.Tensor) -> torch.Tensor:
    return _ContiguousGrad.apply(torch._grouped_mm(x_NI, w_EOI.transpose(-2, -1), offs=offs_E))


class Router(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.weight = nn.Parameter(torch.empty(args.n_routed_experts, args.dim))
        # Selection bias of loss-free balancing: a buffer (saved, never in the optimizer, no grad).
        self.register_buffer("expert_bias", torch.zeros(args.n_routed_experts), persistent=True)

    def _apply(self, fn, recurse=True):
        # The bias moves by γ = 1e-3 steps: it must stay fp32 when the model is cast to bf16.
        super()._apply(fn, recurse)
        self.expert_bias = self.expert_bias.float()
        return self

    def forward(self, x_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (expert ids [N, K], gate weights [N, K] fp32, unbiased scores [N, E] fp32).

        Autocast is off inside: under the trainer's bf16 autocast `F.linear` would cast its fp32 inputs
        back to bf16, and bf16 logits (8 mantissa bits) reorder near-tied experts: at init scale with 256
        experts, 8 groups, top-8, 4% of tokens got another expert set than in fp32 (router alone, measured
        in tests/model/test_moe.py; issue 13 reports 22.8% through the whole model)."""
        with torch.autocast(x_ND.device.type, enabled=False):
            return self.select(F.linear(x_ND.float(), self.weight.float()))

    def select(self, logits_NE: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scores, biased group-limited top-K selection and gate weights from the router logits [N, E]."""
        a = self.args
        logits_NE = logits_NE.float()
        scores_NE = logits_NE.sigmoid() if a.score_func == "sigmoid" else logits_NE.softmax(dim=-1)
        select_NE = scores_NE.detach()
        if a.score_func == "sigmoid":
            select_NE = select_NE + self.expert_bias.float()
        if a.n_expert_groups > 1:
            N = logits_NE.shape[0]
            G = a.n_expert_groups
            grouped_NGe = select_NE.view(N, G, -1)
            if a.score_func == "sigmoid":
                group_NG = grouped_NGe.topk(2, dim=-1).values.sum(dim=-1)
            else:  # V2's device-limited routing ranks a group by its best expert
                group_NG = grouped_NGe.amax(dim=-1)
            keep_NG = group_NG.topk(a.n_limited_groups, dim=-1).indices
            drop_NG = torch.ones_like(group_NG, dtype=torch.bool).scatter_(1, keep_NG, False)
            select_NE = grouped_NGe.masked_fill(drop_NG[..., None], float("-inf")).flatten(1)
        idx_NK = select_NE.topk(a.n_activated_experts, dim=-1).indices
        weights_NK = scores_NE.gather(1, idx_NK)
        if a.norm_topk_prob:
            weights_NK = weights_NK / (weights_NK.sum(dim=-1, keepdim=True) + 1e-20)
        return idx_NK, weights_NK * a.route_scale, scores_NE


class Experts(nn.Module):
    """Routed experts as stacked SwiGLU weights (one row block per expert, nn.Linear layout [out, in]).

    Three exact strategies (no token is dropped), chosen per call:
    * CPU fast path with several intra-op threads, padded `bmm`: each expert's tokens fill one block of
      C rows (C = the largest expert's token count), three `bmm` calls over [E, C, ·]; used while
      E·C ≤ `cpu_bmm_max_pad`·M (bounds the wasted work and memory under skewed routing). On CPU
      `_grouped_mm` is a loop of E small GEMMs, each its own multi-thread parallel region; on a shared
      2-core machine every region waits for a descheduled thread, and the layer ran 2-6x slower than
      with bmm. bmm pays for it in padded rows: single-threaded (no regions to wait on) it does ~20%
      more work than grouped at C ≈ 1.23·M/E, so one thread keeps `_grouped_mm`.
    * Fast path elsewhere (CUDA sm90+ bf16; CPU with one thread or past the padding bound):
      `torch._grouped_mm` on the tokens sorted by expert, int32 offsets.
    * Reference loop (`use_grouped_mm=False`, or no grouped GEMM for this device/dtype): one SwiGLU per
      expert on its contiguous slice of the sorted tokens.
    * Decode path (CPU, autograd off, at most E token copies -- cached generation's B×1 tokens): one SwiGLU
      per *active* expert on its few tokens, its weights read in place (`w1[e]` is a view). The batched
      strategies pay for every expert (sort, gather, E GEMMs or E·C padded rows, scatter) when only K of
      them have a token. It reads the routing table on the host, free on CPU; CUDA keeps the sync-free
      grouped GEMM.
    """

    # Largest E·C / M (padded rows over real ones) at which the CPU fast path uses padded bmm.
    cpu_bmm_max_pad = 1.5

    def __init__(self, args: ModelArgs):
        super().__init__()
        E, D, Fh = args.n_routed_experts, args.dim, args.moe_inter_dim
        self.w1 = nn.Parameter(torch.empty(E, Fh, D))
        self.w2 = nn.Parameter(torch.empty(E, D, Fh))
        self.w3 = nn.Parameter(torch.empty(E, Fh, D))
        self.use_grouped_mm = args.use_grouped_mm
        self.ep = None  # an EPShard once `model.expert_parallel.shard_experts` has sharded this module

    def forward(
        self,
        x_ND: torch.Tensor,
        idx_NK: torch.Tensor,
        gate_NK: torch.Tensor,
        counts_E: torch.Tensor,
        base_ND: torch.Tensor,
    ) -> torch.Tensor:
        """base_ND + Σ_k gate_NK[:, k]·expert_{idx_NK[:, k]}(x_ND); base_ND may be updated in place.

        The gate multiplies the F-wide hidden row, not the D-wide output (w2 is linear, so the result is
        the same), at F/D of the elementwise work forward and backward.
        """
        if self.ep is not None:
            from crawl2score.model.expert_parallel import dispatch_and_combine

            return dispatch_and_combine(self, x_ND, idx_NK, gate_NK, counts_E, base_ND)
        M = idx_NK.numel()
        if x_ND.device.type == "cpu" and 0 < M <= self.w1.shape[0] and not torch.is_grad_enabled():
            return self._few_tokens(x_ND, idx_NK, gate_NK, base_ND)
        if self.use_grouped_mm and x_ND.device.type == "cpu" and M and torch.get_num_threads() > 1:
            cap = int(counts_E.max())  # host read: free on CPU
            if counts_E.shape[0] * cap <= self.cpu_bmm_max_pad * M:
                return base_ND + self._padded_bmm(x_ND, idx_NK, gate_NK, counts_E, cap)
        K = idx_NK.shape[1]
        order_M = idx_NK.flatten().argsort(stable=True)
        token_M = order_M // K
        gate_M = gate_NK.flatten().index_select(0, order_M).to(x_ND.dtype)
        # index_select, not x_ND[token_M]: its backward is index_add_, where advanced indexing's is an
        # accumulating index_put_ (several times slower on CPU in the profile).
        x_MD = x_ND.index_select(0, token_M)
        # torch._grouped_mm is not autocast-aware: under autocast it gets the autocast dtype by hand (the
        # fp32 residual stream would otherwise keep CUDA off its bf16-only grouped GEMM, onto the loop).
        mm_dtype = _autocast_dtype(x_ND)
        if self.use_grouped_mm and grouped_mm_supported(x_ND.device, mm_dtype):
            out_MD = self._grouped(x_MD.to(mm_dtype), counts_E, gate_M.to(mm_dtype))
        else:
            out_MD = self._loop(x_MD, counts_E, gate_M)
        return base_ND.index_add_(0, token_M, out_MD.to(base_ND.dtype))

    def _few_tokens(
        self, x_ND: torch.Tensor, idx_NK: torch.Tensor, gate_NK: torch.Tensor, base_ND: torch.Tensor
    ) -> torch.Tensor:
        """Decode path: experts in ascending id (each token's outputs are summed in the same order as the
        sorted strategies), each on its token copies; a lone copy is a slice, not a gather."""
        K = idx_NK.shape[1]
        gate_M = gate_NK.flatten().to(x_ND.dtype)
        copies: dict[int, list[int]] = {}
        for m, e in enumerate(idx_NK.flatten().tolist()):  # host read: free on CPU
            copies.setdefault(e, []).append(m)
        for e in sorted(copies):
            ms = copies[e]
            if len(ms) == 1:
                m = ms[0]
                x, g, token = x_ND[m // K : m // K + 1], gate_M[m : m + 1], None
            else:
                m_C = torch.tensor(ms, device=x_ND.device)
                token = m_C // K
                x, g = x_ND.index_select(0, token), gate_M.index_select(0, m_C)
            out = F.linear(F.silu(F.linear(x, self.w1[e])) * F.linear(x, self.w3[e]) * g[:, None], self.w2[e])
            if token is None:
                base_ND[m // K : m // K + 1] += out
            else:
                base_ND.index_add_(0, token, out.to(base_ND.dtype))
        return base_ND

    def _padded_bmm(
        self, x_ND: torch.Tensor, idx_NK: torch.Tensor, gate_NK: torch.Tensor, counts_E: torch.Tensor, cap: int
    ) -> torch.Tensor:
        """Routed output [N, D] via [E, C, ·] bmm. Padding slots read an appended zero row of x and carry
        gate 0, so they contribute exact zeros (forward and every gradient) and add into a dropped row."""
        N, D = x_ND.shape
        E, K = counts_E.shape[0], idx_NK.shape[1]
        expert_M, order_M = idx_NK.flatten().sort(stable=True)
        start_E = torch.cumsum(counts_E, 0) - counts_E
        slot_M = expert_M * cap + torch.arange(expert_M.shape[0], device=x_ND.device) - start_E[expert_M]
        token_P = torch.full((E * cap,), N, dtype=torch.long, device=x_ND.device).index_copy_(0, slot_M, order_M // K)
        gate_P = gate_NK.new_zeros(E * cap).index_copy(0, slot_M, gate_NK.flatten().index_select(0, order_M))
        x_ECD = torch.cat([x_ND, x_ND.new_zeros(1, D)]).index_select(0, token_P).view(E, cap, D)
        h_ECF = F.silu(torch.bmm(x_ECD, self.w1.mT)) * torch.bmm(x_ECD, self.w3.mT)
        h_ECF = h_ECF * gate_P.view(E, cap, 1).to(h_ECF.dtype)
        out_PD = torch.bmm(h_ECF, self.w2.mT).view(E * cap, D)
        return out_PD.new_zeros(N + 1, D).index_add_(0, token_P, out_PD)[:N]  # bf16 under autocast

    def _grouped(self, x_MD: torch.Tensor, counts_E: torch.Tensor, gate_M: torch.Tensor) -> torch.Tensor:
        M = x_MD.shape[0]
        pad = x_MD.device.type == "cuda"
        if pad:  # scatter each expert's rows into a block aligned to _CUDA_ALIGN_M rows
            E = counts_E.shape[0]
            padded_E = (counts_E + _CUDA_ALIGN_M - 1) // _CUDA_ALIGN_M * _CUDA_ALIGN_M
            start_E = torch.cumsum(counts_E, 0) - counts_E
            pstart_E = torch.cumsum(padded_E, 0) - padded_E
            expert_M = torch.repeat_interleave(torch.arange(E, device=x_MD.device), counts_E, output_size=M)
            dest_M = torch.arange(M, device=x_MD.device) - start_E[expert_M] + pstart_E[expert_M]
            x_buf = x_MD.new_zeros(M + E * _CUDA_ALIGN_M, x_MD.shape[1])
            x_MD = x_buf.index_copy(0, dest_M, x_MD)
            gate_M = gate_M.new_zeros(x_MD.shape[0]).index_copy(0, dest_M, gate_M)
            counts_E = padded_E
        offs_E = torch.cumsum(counts_E, 0).to(torch.int32)
        w1, w2, w3 = (w.to(x_MD.dtype) for w in (self.w1, self.w2, self.w3))  # a no-op outside autocast
        h_MF = F.silu(_gmm(x_MD, w1, offs_E)) * _gmm(x_MD, w3, offs_E)
        out_MD = _gmm(h_MF * gate_M[:, None], w2, offs_E)
        return out_MD.index_select(0, dest_M) if pad else out_MD

    def _loop(self, x_MD: torch.Tensor, counts_E: torch.Tensor, gate_M: torch.Tensor) -> torch.Tensor:
        """Reference: one SwiGLU per expert on its contiguous slice. `unbind` takes all experts' weight
        views in one autograd node (one [E, ...] gradient); indexing `w[e]` per expert would allocate and
        add a full-size zero gradient per expert in backward (~10x slower on CPU)."""
        counts = counts_E.tolist()
        outs = [
            F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3) * g[:, None], w2)
            for x, g, w1, w3, w2, n in zip(
                x_MD.split(counts),
                gate_M.split(counts),
                self.w1.unbind(0),
                self.w3.unbind(0),
                self.w2.unbind(0),
                counts,
                strict=True,
            )
            if n
        ]
        if not outs:
            return x_MD.new_zeros(0, self.w2.shape[1])
        return torch.cat(outs)


class MoE(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.gate = Router(args)
        self.experts = Experts(args)
        self.shared = MLP(args.dim, args.n_shared_experts * args.moe_inter_dim) if args.n_shared_experts else None
        # Tokens routed to each expert since the last update_expert_bias (training forwards only).
        self.register_buffer("tokens_per_expert", torch.zeros(args.n_routed_experts), persistent=False)
        self.balance_loss: torch.Tensor | None = None  # sequence-wise loss of the last training forward

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.tokens_per_expert = self.tokens_per_expert.float()  # bf16 cannot count past 256 exactly
        return self

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        B, T, D = x_BTD.shape
        x_ND = x_BTD.reshape(B * T, D)
        idx_NK, w_NK, scores_NE = self.gate(x_ND)
        E, K = self.args.n_routed_experts, self.args.n_activated_experts
        flat_idx_M = idx_NK.flatten()  # M = N·K token copies
        # scatter_add_ rather than bincount: CUDA bincount reads the max id back to the host (a sync).
        counts_E = torch.zeros(E, dtype=torch.long, device=x_ND.device).scatter_add_(
            0, flat_idx_M, torch.ones_like(flat_idx_M)
        )
        if self.training and torch.is_grad_enabled():
            # Also during activation-checkpoint recomputation: it must save the same tensors.
            self.balance_loss = self._sequence_balance_loss(idx_NK.view(B, T, K), scores_NE.view(B, T, E))
            # Recomputation runs inside backward: count only in the original forward.
            if torch._C._current_graph_task_id() == -1:
                self.tokens_per_expert += counts_E.to(self.tokens_per_expert.dtype)
        # The routed output is summed into the shared experts' output in place where the strategy allows
        # (linear's backward does not need its output): no zeros buffer, no extra [N, D] add.
        base_ND = self.shared(x_ND) if self.shared is not None else torch.zeros_like(x_ND)
        y_ND = self.experts(x_ND, idx_NK, w_NK, counts_E, base_ND)
        return y_ND.view(B, T, D)

    def _sequence_balance_loss(self, idx_BTK: torch.Tensor, scores_BTE: torch.Tensor) -> torch.Tensor:
        """Σ_i f_i·P_i averaged over sequences (α applied by the caller). f counts the experts actually
        selected (bias and group limit included, as Megatron-Core); P uses the unbiased scores."""
        B, T, E = scores_BTE.shape
        K = idx_BTK.shape[-1]
        hits_BE = torch.zeros(B, E, device=scores_BTE.device).scatter_add_(
            1, idx_BTK.reshape(B, T * K), torch.ones(B, T * K, device=scores_BTE.device)
        )
        f_BE = hits_BE * (E / (K * T))
        p_BE = (scores_BTE / scores_BTE.sum(dim=-1, keepdim=True)).mean(dim=1)
        return (f_BE * p_BE).sum(dim=-1).mean()


@torch.no_grad()
def update_expert_bias(model: nn.Module, gamma: float, process_group=None) -> dict[str, dict]:
    """Loss-free balancing step, once per optimizer step, over every MoE layer (MTP ones included).

    All-reduces the token counts when torch.distributed is initialised so every rank applies the same
    update, then b_i += γ·sign(mean_load − load_i) (V3 eq. 16; no mean subtraction, as Megatron-Core),
    resets the counts, and returns per-layer figures: tokens per expert, MaxVio (max load / mean − 1,
    Wang et al. 2024) and the number of experts that got no token.
    """
    stats: dict[str, dict] = {}
    moes = [(name, m) for name, m in model.named_modules() if isinstance(m, MoE)]
    if not moes:
        return stats
    counts_LE = torch.stack([m.tokens_per_expert for _, m in moes])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(counts_LE, group=process_group)
    for (name, m), counts_E in zip(moes, counts_LE, strict=True):
        mean = counts_E.mean()
        if gamma and counts_E.sum() > 0:
            m.gate.expert_bias += gamma * torch.sign(mean - counts_E).to(m.gate.expert_bias.dtype)
        max_vio = (counts_E.max() / mean - 1).item() if mean > 0 else 0.0
        stats[name] = {
            "tokens_per_expert": counts_E.tolist(),
            "max_vio": max_vio,
            "dead_experts": int((counts_E == 0).sum().item()),
        }
        m.tokens_per_expert.zero_()
    return stats
