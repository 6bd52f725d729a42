"""Every generator a training step may draw from is saved in a checkpoint and restored exactly."""

from __future__ import annotations

import random

import numpy as np
import torch

from crawl2score.model import Transformer, get_preset
from crawl2score.model.train_checkpoint import load_checkpoint_into, save_checkpoint


def _draw() -> tuple:
    return torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)], random.gauss(0, 1)


def test_save_then_load_restores_torch_numpy_and_python_streams(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    model = Transformer(get_preset("tiny").replace(vocab_size=64, max_seq_len=16, n_layers=2))
    optimizer = torch.optim.AdamW(model.parameters())
    random.gauss(0, 1)  # leaves a cached second gaussian in Python's state: it must survive too
    np.random.standard_normal()  # and numpy's cached gaussian
    save_checkpoint(tmp_path, 1, model, optimizer, {"data_position": 0})
    expected = _draw()
    _draw()  # move every stream on, as the killed run would have
    load_checkpoint_into(tmp_path / "step-1", model, optimizer)
    got = _draw()
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])
    assert got[2:] == expected[2:]
