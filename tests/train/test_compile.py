"""`train.compile: true` trains with torch.compile'd blocks (slow: Inductor compiles C++ on the CPU)."""

from __future__ import annotations

import pytest

from tests.train.conftest import events, run_trainer, tiny_config, write_config


@pytest.mark.slow
def test_compiled_training_runs_and_matches_eager_loss(tmp_path, tokens_dir):
    eager = run_trainer(write_config(tmp_path / "e.json", tiny_config(tokens_dir, steps=2)), tmp_path / "eager")
    compiled = run_trainer(
        write_config(tmp_path / "c.json", tiny_config(tokens_dir, steps=2, compile=True)),
        tmp_path / "compiled",
        timeout=600,
    )
    assert eager.returncode == 0 and compiled.returncode == 0, compiled.stderr[-2000:]
    loss_e = [e["loss"] for e in events(eager.stdout, "step")]
    loss_c = [e["loss"] for e in events(compiled.stdout, "step")]
    assert len(loss_c) == 2 and loss_c == pytest.approx(loss_e, rel=1e-3)
