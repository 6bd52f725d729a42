"""Bits per byte through lm-eval's rolling log-likelihood, and the unigram baseline."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from crawl2score.config.eval import EvalConfig
from crawl2score.eval.bpb import load_texts, unigram_bpb


def test_unigram_bpb_is_the_empirical_token_entropy():
    texts = ["ab", "ab"]
    # tokens a,b,a,b: entropy 1 bit/token, 4 tokens over 4 bytes
    assert unigram_bpb(texts, lambda t: list(t)) == pytest.approx(1.0, rel=1e-12)
    assert unigram_bpb(["aaaa"], lambda t: list(t)) == 0.0


def test_public_text_is_a_fixed_english_prefix(shared_dir):
    a = load_texts("public", None, 5000)
    assert a == load_texts("public", None, 5000) and sum(len(t.encode()) for t in a) >= 5000
    assert sum(c.isascii() for t in a for c in t) > 0.95 * sum(len(t) for t in a)


def test_bpb_equals_the_models_own_log_likelihood_over_bytes(tiny_workdir, tmp_path):
    """lm-eval's bits_per_byte for the held-out text equals -sum log2 p / bytes from plain forwards."""
    from crawl2score.eval.lm import Crawl2ScoreLM
    from crawl2score.eval.runner import evaluate_bpb

    tok_dir = tmp_path / "tokenizer"
    shutil.copytree(tiny_workdir / "tokenizer", tok_dir)
    (tok_dir / "heldout").mkdir()
    texts = ["The sum of the first ten odd numbers is one hundred. " * 3, "数学竞赛题目很难。" * 4]
    (tok_dir / "heldout" / "en.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    lm = Crawl2ScoreLM(checkpoint=str(tiny_workdir / "checkpoints"), tokenizer=str(tok_dir), batch_size=2)
    cfg = EvalConfig(bpb=["heldout_en", "heldout_zh"], bpb_max_bytes=10_000)
    out = evaluate_bpb(cfg, lm)
    assert "no held-out text" in out["heldout_zh"]["skipped"]
    en = out["heldout_en"]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    nll = 0.0
    with torch.inference_mode():
        for t in texts:  # each text is shorter than the context: one window, predicted after the EOS prefix
            ids = lm.tok_encode(t)
            logp = torch.log_softmax(lm.model(torch.tensor([ids[:-1]])), -1)[0]
            nll -= float(logp.gather(-1, torch.tensor(ids[1:])[:, None]).sum())
    assert en["bytes"] == n_bytes and en["docs"] == 2
    assert en["bits_per_byte"] == pytest.approx(nll / n_bytes / math.log(2), rel=1e-5)
    assert en["unigram_bits_per_byte"] > 0


def test_training_shard_unigram_is_no_better_than_the_texts_own(tiny_workdir, tmp_path):
    """Gibbs' inequality: the text's own token frequencies give the fewest bits of any unigram model."""
    from transformers import AutoTokenizer

    from crawl2score.eval.bpb import train_unigram_bpb
    from crawl2score.tokenizer.shards import write_shards

    corpus = tmp_path / "corpus.jsonl"
    docs = [f"Document {i}: the answer is {i * 7} and the sum is {i + 3}." for i in range(50)]
    corpus.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(docs)))
    write_shards([corpus], tiny_workdir / "tokenizer", tmp_path / "tokens", workers=1)
    tok = AutoTokenizer.from_pretrained(str(tiny_workdir / "tokenizer"))

    def encode(t):
        return tok.encode(t, add_special_tokens=False)

    texts = ["The answer is 14 and the sum is 5.", "Another document with different words entirely."]
    trained = train_unigram_bpb(texts, encode, tmp_path / "tokens", 512)
    assert trained is not None and trained > unigram_bpb(texts, encode) > 0
    seen = train_unigram_bpb(docs[:5], encode, tmp_path / "tokens", 512)
    assert seen < trained  # text like the training text costs fewer bits under its frequencies
    assert train_unigram_bpb(texts, encode, tmp_path / "tokens", 1024) is None  # another vocabulary
    assert train_unigram_bpb(texts, encode, tmp_path / "nowhere", 512) is None


def test_another_tokenizer_is_scored_on_the_same_bytes(tiny_workdir, tmp_path):
    """An imported model brings its own tokenizer: the held-out bytes stay those of WORKDIR/tokenizer."""
    from crawl2score.eval.runner import evaluate_checkpoint

    from .conftest import build_checkpoint, build_tokenizer

    heldout = tmp_path / "work" / "tokenizer" / "heldout"
    heldout.mkdir(parents=True)
    texts = ["Bits per byte do not depend on the tokenizer. " * 4, "Same bytes, other tokens. " * 6]
    (heldout / "en.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    other = tmp_path / "imported"
    build_tokenizer(other / "tokenizer", ["completely different training text " * 50], vocab_size=300)
    build_checkpoint(other, vocab_size=300, seed=1)
    cfg = EvalConfig(benchmarks=[], bpb=["heldout_en"], bpb_max_bytes=10_000)
    ours = evaluate_checkpoint(cfg, tiny_workdir / "checkpoints", heldout_dir=heldout)["_bpb"]["heldout_en"]
    theirs = evaluate_checkpoint(cfg, other / "checkpoints", heldout_dir=heldout)["_bpb"]["heldout_en"]
    assert ours["bytes"] == theirs["bytes"] == sum(len(t.encode()) for t in texts)
    assert ours["tokens"] != theirs["tokens"]
    assert ours["unigram_from"] == theirs["unigram_from"] == "the text itself"  # no WORKDIR/tokens here
    assert 0 < theirs["bits_per_byte"] and 0 < ours["bits_per_byte"]
