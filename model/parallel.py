"""Data parallelism applied from outside the model code (torchtitan's split): DDP or FSDP2.

The model keeps its own forward and `loss`; this module returns the callable the training loop uses for
the loss, so the model never knows how it is parallelised.

* DDP replicates weights and all-reduces gradients. Buffers are not broadcast: each rank's MoE token
  counts are its own until `update_expert_bias` all-reduces them (a broadcast would overwrite them with
  rank 0's). `find_unused_parameters`: on CPU the experts run as a loop that skips experts with no token,
  and λ = 0 leaves the MTP modules out of the graph.
* FSDP2 (`fully_shard`) shards every block, the MTP modules and then the root; `loss` is registered as
  an FSDP forward method so calling it (not `forward`) still gathers the root's parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn


class _LossModule(nn.Module):
    """DDP only hooks `forward`: route `model.loss` through a forward so gradients are synchronised."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return self.model.loss(*args, **kwargs)


class Parallel:
    """The loss callable plus gradient-sync control for accumulation, whatever the wrapping."""

    def __init__(self, model: nn.Module, mode: str, device: torch.device, ignore: tuple[str, ...] = ()):
        """`ignore`: parameter names DDP and FSDP leave alone (expert-parallel shards: different on every
        rank, neither broadcast from rank 0, sharded nor averaged)."""
        self.model = model  # the bare module: state dicts, bias updates, optimizer parameters
        self.mode = mode if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else "none"
        self._ddp: nn.Module | None = None
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            wrapped = _LossModule(model)
            if ignore:
                DDP._set_params_and_buffers_to_ignore_for_model(wrapped, [f"model.{n}" for n in ignore])
            self._ddp = DDP(wrapped, device_ids=ids, broadcast_buffers=False, find_unused_parameters=True)
        elif self.mode == "fsdp":
            from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

            named = dict(model.named_parameters())
            skip = {named[n] for n in ignore} or None
            for block in list(model.layers) + list(getattr(model, "mtp", [])):
                fully_shard(block, ignored_params=skip)
            fully_shard(model, ignored_params=skip)
            register_fsdp_forward_method(model, "loss")

    def loss_fn(self) -> Callable:
        return self._ddp if self._ddp is not None else self.model.loss

    def set_grad_sync(self, enabled: bool) -> None:
        """Skip the gradient all-reduce/reduce-scatter on all but the last micro-batch of a step."""
        if self._ddp is not None:
            self._ddp.require_backward_grad_sync = enabled
        elif self.mode == "fsdp":
            self.model.set_requires_gradient_sync(enabled)


def clip_grad_norm_(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip to `max_norm` and return the total norm, with DTensor (FSDP2) gradients reduced across ranks
    first (torchtitan's `clip_grad_norm_` does the same full_tensor step)."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=True)
    if hasattr(total, "full_tensor"):
        total = total.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach=True)
    return total
