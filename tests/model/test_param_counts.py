"""Parameter counts of the published shapes against the reports (built on the meta device)."""

from __future__ import annotations

import pytest

from crawl2score.model import get_preset
from crawl2score.model.info import model_info


def test_deepseek_v3_counts():
    info = model_info(get_preset("deepseek-v3"))
    assert abs(info["total_params"] / 671e9 - 1) < 0.01
    # "671B main model + 14B MTP" (HF card: 685B): the release's MTP layer stores its own embedding/head.
    assert abs(info["mtp_params_as_released"] / 14e9 - 1) < 0.05
    assert abs((info["total_params"] + info["mtp_params_as_released"]) / 685e9 - 1) < 0.01
    # Convention (model/info.py): without input embedding and router gates.
    assert round(info["activated_params"] / 1e9) == 37


def test_deepseek_v2_lite_counts():
    info = model_info(get_preset("deepseek-v2-lite"))
    assert abs(info["total_params"] / 15.7e9 - 1) < 0.01
    assert round(info["activated_params"] / 1e9, 1) == 2.4
    assert info["mtp_params"] == 0


@pytest.mark.parametrize(("name", "low", "high"), [("small", 100e6, 300e6), ("medium", 1e9, 3e9)])
def test_project_presets_sizes(name, low, high):
    info = model_info(get_preset(name))
    assert low <= info["total_params"] <= high


def test_kv_cache_figures_v3():
    info = model_info(get_preset("deepseek-v3"))
    # 576 values per layer (512 latent + 64 rope) against 2·128·128 for MHA, bf16.
    assert info["kv_cache_bytes_per_token"] == 61 * 576 * 2
    assert info["kv_cache_bytes_per_token_mha"] == 61 * 2 * 128 * 128 * 2


@pytest.mark.parametrize("name", ["tiny", "medium", "deepseek-v3"])
def test_one_flops_count_for_model_info_and_the_trainer(name):
    """`model-info` and the trainer's MFU read the same helper; the MTP modules count (routers included)
    and so does the head once more per MTP depth, since each depth runs it."""
    from crawl2score.model.info import train_active_params, train_flops_per_token

    args = get_preset(name)
    info = model_info(args)
    assert info["train_flops_per_token"] == train_flops_per_token(args)
    extra = train_active_params(args) - train_active_params(args.replace(n_mtp_layers=0))
    mtp_routers = args.n_mtp_layers * args.n_routed_experts * args.dim  # MTP blocks are MoE here
    assert extra == info["activated_params_mtp"] + mtp_routers + args.n_mtp_layers * args.vocab_size * args.dim
