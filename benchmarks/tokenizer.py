"""Tokenizer stage throughput: training MB/s at 102,400 entries and encoding MB/s into shards.

Each figure is set against a bare `tokenizers` call on the same text, already in memory, in the same run:
the ratio is what our stage adds (gzip + JSON streaming, language sampling, held-out split, writing the HF
files; for shards, the uint32 arrays, index and atomic writes). Goals (issue 3): training >= 10 MB/s,
encoding >= 5 MB/s on 2 cores, overhead <= 10%.

Also measured, bare: the count phase alone (BPE stopped before its first merge) so the merge loop's share is
visible, and training/encoding with the three-pass reference pre-tokenizer (the previous implementation,
same splits) so the one-pass regex's saving is measured under the same load. CPU seconds (all threads) are
reported next to wall time because the benchmark machine is shared.

    .venv/bin/python benchmarks/tokenizer.py [--mb 50] [--vocab 102400] [--workers 2] [--no-reference]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="generated corpus size in MB of UTF-8 text")
    parser.add_argument("--vocab", type=int, default=102_400)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-docs", type=int, default=512)
    parser.add_argument(
        "--no-reference", dest="reference", action="store_false", help="skip the three-pass pre-tokenizer runs"
    )
    args = parser.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.workers)
    os.environ["CRAWL2SCORE_NO_BAR"] = "1"

    from tokenizers import pre_tokenizers, trainers

    from crawl2score.config.tokenizer import TokenizerConfig
    from crawl2score.tokenizer.bpe import load_tokenizer, new_tokenizer, reference_pre_tokenizer, special_tokens
    from crawl2score.tokenizer.shards import write_shards
    from crawl2score.tokenizer.synthetic import write_corpus
    from crawl2score.tokenizer.train import train_tokenizer

    cfg = TokenizerConfig(
        vocab_size=args.vocab, baseline=False, heldout_fraction=0.0, workers=args.workers, batch_docs=args.batch_docs
    )
    specials = special_tokens(cfg.reserved_special_tokens)
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}

    class timed:
        def __init__(self, name: str) -> None:
            self.name = name

        def __enter__(self) -> None:
            self.t, self.c = time.perf_counter(), time.process_time()

        def __exit__(self, *exc: object) -> None:
            wall[self.name] = time.perf_counter() - self.t
            cpu[self.name] = time.process_time() - self.c  # all threads of the process
            print(f"{self.name}: {wall[self.name]:.1f} s wall, {cpu[self.name]:.1f} CPU s", flush=True)

    def bare_train(vocab: int, reference: bool = False):
        """Bare training: the same pre-tokenizer and trainer settings, text in memory, nothing written."""
        tok = new_tokenizer("deepseek")
        if reference:
            tok.pre_tokenizer = reference_pre_tokenizer()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab,
            min_frequency=cfg.min_frequency,
            show_progress=False,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(iter(batches), trainer=trainer)
        return tok

    with tempfile.TemporaryDirectory(prefix="bench-tokenizer-") as tmp:
        tmp_path = Path(tmp)
        t = time.perf_counter()
        files = write_corpus(tmp_path / "corpus", int(args.mb * 1e6), files=4, seed=0)
        texts = [json.loads(line)["text"] for f in files for line in gzip.open(f, "rt", encoding="utf-8")]
        n_bytes = sum(len(x.encode("utf-8")) for x in texts)
        batches = [texts[i : i + args.batch_docs] for i in range(0, len(texts), args.batch_docs)]
        print(f"corpus: {n_bytes / 1e6:.1f} MB, {len(texts):,} docs ({time.perf_counter() - t:.0f} s)", flush=True)

        # Phases: a vocabulary of only specials + 256 bytes stops BPE before its first merge, so this is the
        # count phase (pre-tokenize + count words + count pairs); the rest of bare_train is the merge loop.
        with timed("bare_count"):
            bare_train(len(specials) + 256)
        if args.reference:
            with timed("bare_train_reference"):
                bare_train(args.vocab, reference=True)
        with timed("bare_train"):
            bare_vocab = bare_train(args.vocab).get_vocab_size()
        with timed("train"):
            figures = train_tokenizer(cfg, files, tmp_path / "tokenizer")

        enc = load_tokenizer(tmp_path / "tokenizer")

        def bare_encode() -> int:
            return sum(len(e.ids) for b in batches for e in enc.encode_batch_fast(b, add_special_tokens=False))

        if args.reference:
            one_pass = enc.pre_tokenizer
            enc.pre_tokenizer = reference_pre_tokenizer()
            with timed("bare_encode_reference"):
                ref_tokens = bare_encode()
            enc.pre_tokenizer = one_pass
        with timed("bare_encode"):
            bare_tokens = bare_encode()
        if args.reference:
            assert ref_tokens == bare_tokens
        with timed("encode"):
            manifest = write_shards(
                files, tmp_path / "tokenizer", tmp_path / "tokens", batch_docs=args.batch_docs, workers=args.workers
            )
        assert manifest["num_tokens"] == bare_tokens + manifest["num_docs"]

    mb = n_bytes / 1e6
    result: dict = {
        "corpus_mb": round(mb, 1),
        "docs": len(texts),
        "vocab_size": figures["vocab_size"],
        "learned_size": figures["learned_size"],
        "bare_vocab_size": bare_vocab,
        "workers": args.workers,
        "train_mb_s": round(mb / wall["train"], 3),
        "bare_train_mb_s": round(mb / wall["bare_train"], 3),
        "train_ratio_to_bare": round(wall["bare_train"] / wall["train"], 3),
        "train_cpu_ratio_to_bare": round(cpu["train"] / cpu["bare_train"], 3),
        "bare_train_mb_per_cpu_s": round(mb / cpu["bare_train"], 3),
        "count_phase_cpu_share": round(cpu["bare_count"] / cpu["bare_train"], 3),
        "encode_mb_s": round(mb / wall["encode"], 3),
        "bare_encode_mb_s": round(mb / wall["bare_encode"], 3),
        "encode_ratio_to_bare": round(wall["bare_encode"] / wall["encode"], 3),
        "encode_cpu_ratio_to_bare": round(cpu["encode"] / cpu["bare_encode"], 3),
        "bare_encode_mb_per_cpu_s": round(mb / cpu["bare_encode"], 3),
        "cpu_seconds": {k: round(v, 1) for k, v in cpu.items()},
        "wall_seconds": {k: round(v, 1) for k, v in wall.items()},
        "load_average": round(os.getloadavg()[0], 1),
        "tokens": manifest["num_tokens"],
        "bytes_per_token": round(n_bytes / bare_tokens, 3),
    }
    if args.reference:  # one regex pass against the three-pass reference pre-tokenizer (same splits)
        result["one_pass_cpu_saving"] = {
            "train": round(1 - cpu["bare_train"] / cpu["bare_train_reference"], 3),
            "encode": round(1 - cpu["bare_encode"] / cpu["bare_encode_reference"], 3),
        }
    print(json.dumps(result, indent=2))
    print(
        f"| {result['corpus_mb']} MB | {result['vocab_size']:,} | {result['train_mb_s']} "
        f"({result['bare_train_mb_s']} bare, ratio {result['train_ratio_to_bare']}) | {result['encode_mb_s']} "
        f"({result['bare_encode_mb_s']} bare, ratio {result['encode_ratio_to_bare']}) |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
