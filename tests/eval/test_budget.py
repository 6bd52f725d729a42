"""Generation budgets never cut the prompt: requests at the small, medium and DeepSeek-V3 shapes.

The models are the presets' real shapes on the meta device (no weights): only the requests lm-eval
builds and the model plans are checked; the decoding seam returns at once.
"""

from __future__ import annotations

import json

import pytest
import torch

from crawl2score.config import load_config
from crawl2score.eval.decoding import Generation
from crawl2score.eval.lm import Crawl2ScoreLM, PromptTooLong, plan_budget


class _RecordingLM(Crawl2ScoreLM):
    """The request plan is real; decoding (impossible without weights) returns EOS at once."""

    def _generate(self, prompts, max_new, temperature, top_p, seeds, stop):
        self.calls.append(([list(p) for p in prompts], max_new))
        return [Generation([self.eot_token_id], "eos") for _ in prompts]


def _meta_lm(preset: str, tokenizer_dir, cfg) -> _RecordingLM:
    from crawl2score.model import Transformer, get_preset

    with torch.device("meta"):
        model = Transformer(get_preset(preset))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    lm = _RecordingLM(model=model, tokenizer=tok, batch_size=4, max_new_tokens=cfg.max_new_tokens)
    lm.calls = []
    return lm


def test_plan_budget():
    assert plan_budget([1] * 100, 8192, 4096).max_new == 3996
    assert plan_budget([1] * 100, 64, 4096).max_new == 64
    assert plan_budget([1] * 4095, 8192, 4096).max_new == 1
    with pytest.raises(PromptTooLong, match="c2s_x problem 7: prompt of 4096 tokens"):
        plan_budget([1] * 4096, 16, 4096, name="c2s_x problem 7")
    b = plan_budget(list(range(5000)), 16, 4096, truncate=True)
    assert b.truncated and len(b.prompt) == 4080 and b.prompt[-1] == 4999 and b.max_new == 16


# (preset config, model preset): each preset's own eval section; DeepSeek-V3's shape under medium's.
SHAPES = [("small", "small"), ("medium", "medium"), ("medium", "deepseek-v3")]


@pytest.mark.parametrize(("config", "preset"), SHAPES)
@pytest.mark.parametrize("protocol", ["base", "chat"])
def test_requests_keep_the_whole_prompt_at_real_shapes(tiny_workdir, shared_dir, tmp_path, config, preset, protocol):
    from crawl2score.eval.runner import evaluate_lm

    cfg = load_config(config).eval.model_copy(
        update={
            "protocol": protocol,
            "benchmarks": ["aime24", "math500", "cnmo24"],
            "bpb": [],
            "limit": 2,
            "num_samples": 1,
            "device": "cpu",
            "benchmarks_dir": str(shared_dir / "data" / "benchmarks"),
        }
    )
    lm = _meta_lm(preset, tiny_workdir / "tokenizer", cfg)
    context = lm.max_length
    assert context == 4096
    out = evaluate_lm(cfg, lm, out_dir=tmp_path)
    prompts = sorted(len(p) for ps, _ in lm.calls for p in ps)
    sent = []
    for name in ("aime24", "math500", "cnmo24"):
        for line in (tmp_path / f"{name}.samples.jsonl").read_text().splitlines():
            sent.append(len(lm.tok_encode(json.loads(line)["prompt"])))
        req = out[name]["requests"]
        assert req["prompts_truncated"] == 0 and req["context"] == context
        assert req["requested_new_tokens"] == cfg.max_new_tokens
    assert prompts == sorted(sent)  # every prompt reaches the model whole
    for ps, max_new in lm.calls:
        longest = max(len(p) for p in ps)
        assert longest + max_new <= context
        assert all(max_new == min(cfg.max_new_tokens, context - len(p)) for p in ps)
    if cfg.max_new_tokens >= context:  # medium asks 8,192 new tokens of a 4,096 context: the budget shrinks
        assert all(out[n]["requests"]["budget_reduced"] == 2 for n in ("aime24", "math500", "cnmo24"))


def test_a_prompt_longer_than_the_context_is_an_error_naming_the_problem(tiny_workdir, shared_dir):
    from crawl2score.config.eval import EvalConfig
    from crawl2score.eval.runner import evaluate_checkpoint

    cfg = EvalConfig(
        benchmarks=["aime24"],
        bpb=[],
        protocol="base",
        limit=1,
        max_new_tokens=4,
        benchmarks_dir=str(shared_dir / "data" / "benchmarks"),
    )
    with pytest.raises(PromptTooLong, match=r"c2s_aime24_base problem AIME2024-I-1: prompt of \d+ tokens"):
        evaluate_checkpoint(cfg, tiny_workdir / "checkpoints")
