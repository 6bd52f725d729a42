"""A random tiny checkpoint and a tiny byte-level BPE tokenizer in a WORKDIR layout, built once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crawl2score.tokenizer.chat import write_chat_template

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
VOCAB = 512


def build_tokenizer(out_dir: Path, texts: list[str], vocab_size: int = VOCAB) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    hf.save_pretrained(str(out_dir))
    write_chat_template(out_dir)  # as the tokenizer stage does


def build_checkpoint(workdir: Path, vocab_size: int = VOCAB, seed: int = 0, **overrides) -> Path:
    import torch

    from crawl2score.model import Transformer, get_preset, save_model
    from crawl2score.model.checkpoint import mark_latest

    torch.manual_seed(seed)
    args = get_preset("tiny")
    args.vocab_size = vocab_size
    for k, v in overrides.items():
        setattr(args, k, v)
    model = Transformer(args)
    step = workdir / "checkpoints" / "step-1"
    save_model(model, step)
    mark_latest(step)
    return step


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory, shared_dir) -> Path:
    """WORKDIR with tokenizer/ (DeepSeek-V3 chat template) and checkpoints/step-1 (random weights, vocab 512,
    max_seq_len 256: the 4-shot base prompt does not fit, so base-protocol runs set truncate_prompts)."""
    workdir = tmp_path_factory.mktemp("evalwork")
    bench = shared_dir / "data" / "benchmarks"
    texts = [json.loads(line)["problem"] for f in sorted(bench.glob("*.jsonl")) for line in f.open(encoding="utf-8")]
    build_tokenizer(workdir / "tokenizer", texts)
    build_checkpoint(workdir)
    return workdir
