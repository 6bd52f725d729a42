"""DeepSeekMoE with auxiliary-loss-free balancing (DeepSeek-V3 §2.1.2, Wang et al. 2024).

The router scores experts in fp32 (sigmoid for V3, softmax for V2/V2-Lite), adds a per-expert bias for
*selection only*, limits each token to its best `n_limited_groups` groups (a group scores the sum of its
top-2 biased scores), picks the top-K experts, and weights them with the unbiased scores normalised over
the selection times `route_scale`. No token is dropped. The bias is not learnt by gradient: the MoE
layer only counts tokens per expert, and `update_expert_bias` (called by the trainer once per optimizer
step) moves it by γ·sign(mean load − load). The sequence-wise balance loss α·Σ f_i·P_i is the
complementary safeguard (V3 eq. 17-20).

Legend: B batch, T sequence, N tokens (B·T), D model dim, E routed experts, K experts per token,
G expert groups, F expert hidden width.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from model.config import ModelArgs
from model.layers import MLP

# Grouped GEMM on CUDA reads each expert's rows with aligned loads; pad every group to a multiple of this.
_CUDA_ALIGN_M = 16
_GROUPED_MM_OK: dict[tuple[str, torch.dtype], bool] = {}


def grouped_mm_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Probe torch._grouped_mm once per (device type, dtype): forward and backward on a tiny problem."""
    key = (device.type, dtype)
    if key not in _GROUPED_MM_OK:
        ok = hasattr(torch, "_grouped_mm")
        if ok and device.type == "cuda":
            ok = dtype == torch.bfloat16 and torch.cuda.get_device_capability(device) >= (9, 0)
        if ok and not torch.compiler.is_compiling():
            try:
                # Own saved-tensor hooks: an enclosing activation checkpoint must not see the probe.
                hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)
                with torch.inference_mode(False), torch.enable_grad(), hooks:
                    x = torch.randn(32, 16, device=device, dtype=dtype, requires_grad=True)
                    w = torch.randn(2, 16, 16, device=device, dtype=dtype, requires_grad=True)
                    offs = torch.tensor([16, 32], dtype=torch.int32, device=device)
                    _gmm(x, w, offs).sum().backward()
            except (RuntimeError, NotImplementedError, TypeError):
                ok = False
        _GROUPED_MM_OK[key] = ok
    return _GROUPED_MM_OK[key]


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
        """Returns (expert ids [N, K], gate weights [N, K] fp32, unbiased scores [N, E] fp32)."""
        a = self.args
        logits_NE = F.linear(x_ND.float(), self.weight.float())
        scores_NE = logits_NE.sigmoid() if a.score_func == "sigmoid" else logits_NE.softmax(dim=-1)
        select_NE = scores_NE.detach()
        if a.score_func == "sigmoid":
            select_NE = select_NE + self.expert_bias.float()
        if a.n_expert_groups > 1:
            N = x_ND.shape[0]
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
    """Routed experts as stacked SwiGLU weights (one row block per expert, nn.Linear layout [out, in])."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        E, D, Fh = args.n_routed_experts, args.dim, args.moe_inter_dim
        self.w1 = nn.Parameter(torch.empty(E, Fh, D))
        self.w2 = nn.Parameter(torch.empty(E, D, Fh))
        self.w3 = nn.Parameter(torch.empty(E, Fh, D))
        self.use_grouped_mm = args.use_grouped_mm

    def forward(self, x_ND: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        """x_ND: tokens sorted by expert; counts_E: how many rows each expert owns."""
        if self.use_grouped_mm and grouped_mm_supported(x_ND.device, x_ND.dtype):
            return self._grouped(x_ND, counts_E)
        return self._loop(x_ND, counts_E)

    def _grouped(self, x_ND: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        N = x_ND.shape[0]
        pad = x_ND.device.type == "cuda"
        if pad:  # scatter each expert's rows into a block aligned to _CUDA_ALIGN_M rows
            E = counts_E.shape[0]
            padded_E = (counts_E + _CUDA_ALIGN_M - 1) // _CUDA_ALIGN_M * _CUDA_ALIGN_M
            start_E = torch.cumsum(counts_E, 0) - counts_E
            pstart_E = torch.cumsum(padded_E, 0) - padded_E
            expert_N = torch.repeat_interleave(torch.arange(E, device=x_ND.device), counts_E, output_size=N)
            dest_N = torch.arange(N, device=x_ND.device) - start_E[expert_N] + pstart_E[expert_N]
            x_buf = x_ND.new_zeros(N + E * _CUDA_ALIGN_M, x_ND.shape[1])
            x_ND = x_buf.index_copy(0, dest_N, x_ND)
            counts_E = padded_E
        offs_E = torch.cumsum(counts_E, 0).to(torch.int32)
        h_NF = F.silu(_gmm(x_ND, self.w1, offs_E)) * _gmm(x_ND, self.w3, offs_E)
        out_ND = _gmm(h_NF, self.w2, offs_E)
        return out_ND[dest_N] if pad else out_ND

    def _loop(self, x_ND: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        outs = []
        start = 0
        for e, n in enumerate(counts_E.tolist()):
            if n == 0:
                continue
            x = x_ND[start : start + n]
            outs.append(F.linear(F.silu(F.linear(x, self.w1[e])) * F.linear(x, self.w3[e]), self.w2[e]))
            start += n
        if not outs:
            return x_ND.new_zeros(0, self.w2.shape[1])
        return torch.cat(outs)


class MoE(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.gate = Router(args)
        self.experts = Experts(args)
        self.shared = (
            MLP(args.dim, args.n_shared_experts * args.moe_inter_dim) if args.n_shared_experts else None
        )
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
        flat_idx = idx_NK.flatten()
        counts_E = torch.bincount(flat_idx, minlength=E)
        if self.training and torch.is_grad_enabled():
            # Also during activation-checkpoint recomputation: it must save the same tensors.
            self.balance_loss = self._sequence_balance_loss(idx_NK.view(B, T, K), scores_NE.view(B, T, E))
            # Recomputation runs inside backward: count only in the original forward.
            if torch._C._current_graph_task_id() == -1:
                self.tokens_per_expert += counts_E.to(self.tokens_per_expert.dtype)
        order = flat_idx.argsort(stable=True)
        token_of_row = order // K
        out_rows = self.experts(x_ND[token_of_row], counts_E)
        out_rows = out_rows * w_NK.flatten()[order, None].to(out_rows.dtype)
        y_ND = torch.zeros_like(x_ND).index_add_(0, token_of_row, out_rows)
        if self.shared is not None:
            y_ND = y_ND + self.shared(x_ND)
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
