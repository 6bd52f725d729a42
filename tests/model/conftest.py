"""Fixtures for the model tests: tiny shapes with a small vocabulary so every test runs in seconds."""

from __future__ import annotations

import pytest
import torch

from crawl2score.model import ModelArgs, Transformer, get_preset


@pytest.fixture
def tiny_args() -> ModelArgs:
    return get_preset("tiny").replace(vocab_size=256, max_seq_len=64)


def make_model(args: ModelArgs, seed: int = 0, scale: float = 1.0) -> Transformer:
    """A random model; `scale` > 1 sharpens the (std 0.006) init so outputs differ visibly."""
    torch.manual_seed(seed)
    model = Transformer(args)
    if scale != 1.0:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.endswith("norm.weight"):
                    p.mul_(scale)
    return model


@pytest.fixture(name="make_model")
def make_model_fixture():
    return make_model


@pytest.fixture
def tiny_model(tiny_args) -> Transformer:
    return make_model(tiny_args, scale=10.0)
