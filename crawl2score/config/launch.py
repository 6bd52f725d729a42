"""The `launch` section: how the trainer's processes are started (torchrun), not what they compute, so it
is no part of the train stage's key. One node: `nproc` processes with a standalone rendezvous. Several
nodes: the same command on every node with `nnodes`, its `node_rank` and one `rdzv_endpoint`, as torchrun
documents; Slurm sets these from its own variables (infra/slurm_train.sbatch)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LaunchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nproc: int | None = Field(None, ge=1, description="processes per node; default one per GPU (1 on CPU)")
    nnodes: int = Field(1, ge=1, description="nodes of the run; > 1 needs rdzv_endpoint")
    node_rank: int | None = Field(None, ge=0, description="this node's rank (c10d assigns one when unset)")
    rdzv_endpoint: str | None = Field(None, description="HOST:PORT of the rendezvous, e.g. the first node:29500")
    rdzv_id: str = Field("crawl2score", description="the run's rendezvous id, the same on every node")
    rdzv_backend: str = Field("c10d", description="torchrun rendezvous backend")

    @model_validator(mode="after")
    def _needs_endpoint(self) -> LaunchConfig:
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"launch.nnodes={self.nnodes} needs launch.rdzv_endpoint (HOST:PORT)")
        if self.node_rank is not None and self.node_rank >= self.nnodes:
            raise ValueError(f"launch.node_rank={self.node_rank} must be below launch.nnodes={self.nnodes}")
        return self
