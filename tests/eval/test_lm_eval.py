"""lm-eval end to end on a random tiny checkpoint (real lm-eval, real math-verify, CPU), and the generator."""

from __future__ import annotations

import json

import pytest
import torch

from crawl2score.config.eval import EvalConfig
from tests.tolerance import approx, model_terms


@pytest.fixture(scope="module")
def lm(tiny_workdir):
    from crawl2score.eval.lm import Crawl2ScoreLM

    return Crawl2ScoreLM(checkpoint=str(tiny_workdir / "checkpoints"), batch_size=4, max_new_tokens=6, seed=7)


class _Req:
    def __init__(self, *args):
        self.args = args


def test_tokenizer_defaults_to_workdir_tokenizer(lm, tiny_workdir):
    assert lm.tokenizer_dir.resolve() == (tiny_workdir / "tokenizer").resolve()
    assert lm.tok_encode("x")[0] == lm.eot_token_id  # documents follow an EOS in the shards


def test_sampling_with_a_seed_is_reproducible_at_any_batch_size(lm):
    kw = {"until": [], "do_sample": True, "temperature": 1.0, "top_p": 0.95, "max_gen_toks": 6}
    reqs = [_Req("Problem: 1+1?", kw), _Req("Problem: 1+1?", kw), _Req("Another problem", kw)]
    a = lm.generate_until(reqs, disable_tqdm=True)
    lm.batch_size_per_gpu = 1
    try:
        b = lm.generate_until(reqs, disable_tqdm=True)
    finally:
        lm.batch_size_per_gpu = 4
    assert a == b
    assert a[0] != a[1] or a[0] == ""  # two copies of one prompt get different seeds


def test_greedy_matches_model_generate(lm):
    from crawl2score.model.generate import generate

    prompt = "Find the sum of all integer bases"
    kw = {"until": [], "do_sample": False, "max_gen_toks": 6}
    text = lm.generate_until([_Req(prompt, kw)], disable_tqdm=True)[0]
    ref = generate(lm.model, [lm.tok_encode(prompt)], 6, eos_id=lm.eot_token_id)[0]
    assert text == lm.tokenizer.decode(ref, skip_special_tokens=True)
    assert lm.generation_log[-1]["temperature"] == 0.0


def test_loglikelihood_matches_a_plain_forward(lm):
    ctx, cont = "The answer is", " 42"
    ((ll, _greedy),) = lm.loglikelihood([_Req(ctx, cont)], disable_tqdm=True)
    c, w = lm.tok_encode(ctx), lm.tok_encode(ctx + cont)
    with torch.inference_mode():
        logp = torch.log_softmax(lm.model(torch.tensor([w[:-1]])), -1)[0]
    ref = sum(float(logp[i - 1, w[i]]) for i in range(len(c), len(w)))
    # Same model, another batch layout: the forward's sums, the log-softmax over the vocabulary, the sum.
    terms = model_terms(lm.model.args, len(w)) + lm.model.args.vocab_size + len(w) - len(c)
    assert ll == approx(ref, terms=terms)
    (roll,) = lm.loglikelihood_rolling([_Req("some text " * 200)], disable_tqdm=True)  # longer than 256
    assert roll < 0


def test_lm_eval_end_to_end_all_tasks_and_protocol_reaches_generator(tiny_workdir, tmp_path, shared_dir):
    """Every benchmark in both protocols, 1 problem each: the settings lm-eval hands the model are the
    protocol's (chat: sampled at 0.7 / 0.95 with n samples; base: greedy, Minerva stop string)."""
    from crawl2score.eval.runner import evaluate_checkpoint

    cfg = EvalConfig(
        benchmarks=["aime24", "aime25", "math500", "cnmo24"],
        bpb=[],
        protocol="chat",
        limit=1,
        max_new_tokens=4,
        num_samples=3,
        batch_size=4,
        truncate_prompts=True,
        benchmarks_dir=str(shared_dir / "data" / "benchmarks"),
    )
    fed: list[tuple[int, int]] = []  # the eval task's progress artifact is fed from here
    out = evaluate_checkpoint(
        cfg, tiny_workdir / "checkpoints", out_dir=tmp_path, on_generated=lambda *a: fed.append(a)
    )
    assert fed and fed[-1] == (10, 10) and [d for d, _ in fed] == sorted(d for d, _ in fed)  # 3 x 3 + 1 requests
    for name in ("aime24", "aime25", "cnmo24"):
        fig = out[name]
        assert fig["problems"] == 1 and fig["samples"] == 3 and "pass@2" in fig
        assert fig["settings"]["generation_kwargs"]["temperature"] == 0.7
        assert 0.0 <= fig["accuracy"] <= 1.0 and fig["hit_limit_rate"] is not None
        rec = json.loads((tmp_path / f"{name}.samples.jsonl").read_text().splitlines()[0])
        assert len(rec["outputs"]) == 3 and len(rec["correct"]) == 3 and "boxed" in rec["prompt"]
        # the tokenizer's chat template wraps the problem: BOS, user turn, open assistant turn
        assert rec["prompt"].startswith("<｜begin▁of▁sentence｜><｜User｜>") and rec["prompt"].endswith(
            "<｜Assistant｜>"
        )
        assert fig["settings"]["chat_template"] is True and fig["requests"]["requests"] == 3
    assert out["math500"]["samples"] == 1  # the report scores MATH-500 greedily

    cfg_base = cfg.model_copy(update={"protocol": "base", "benchmarks": ["math500"]})
    from crawl2score.eval.lm import Crawl2ScoreLM

    seen = []
    orig = Crawl2ScoreLM._generate

    def spy(self, prompts, max_new, temperature, top_p, seeds, stop):
        seen.append((len(prompts), max_new, temperature, top_p))
        return orig(self, prompts, max_new, temperature, top_p, seeds, stop)

    Crawl2ScoreLM._generate = spy
    try:
        out = evaluate_checkpoint(cfg_base, tiny_workdir / "checkpoints")
    finally:
        Crawl2ScoreLM._generate = orig
    assert seen == [(1, 4, 0.0, 1.0)]
    assert out["math500"]["settings"]["num_fewshot"] == 4
    assert out["math500"]["requests"]["prompts_truncated"] == 1  # the 4-shot prompt exceeds 256 tokens, counted
    assert "Problem:" in out["math500"]["settings"]["generation_kwargs"]["until"]


def test_chat_protocol_sampling_reaches_the_generator(tiny_workdir, shared_dir):
    from crawl2score.eval.lm import Crawl2ScoreLM
    from crawl2score.eval.runner import evaluate_checkpoint

    seen = []
    orig = Crawl2ScoreLM._generate

    def spy(self, prompts, max_new, temperature, top_p, seeds, stop):
        seen.append((len(prompts), max_new, temperature, top_p))
        return orig(self, prompts, max_new, temperature, top_p, seeds, stop)

    cfg = EvalConfig(
        benchmarks=["aime24"],
        bpb=[],
        protocol="chat",
        limit=1,
        max_new_tokens=3,
        num_samples=4,
        temperature=0.6,
        top_p=0.9,
        truncate_prompts=True,  # the AIME prompt is longer than this checkpoint's 256 tokens
        benchmarks_dir=str(shared_dir / "data" / "benchmarks"),
    )
    Crawl2ScoreLM._generate = spy
    try:
        evaluate_checkpoint(cfg, tiny_workdir / "checkpoints")
    finally:
        Crawl2ScoreLM._generate = orig
    assert seen == [(4, 3, 0.6, 0.9)]
