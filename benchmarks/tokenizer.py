"""Tokenizer stage throughput: training MB/s at 102,400 entries and encoding MB/s into shards.

Each figure is set against a bare `tokenizers` call on the same text, already in memory, in the same run:
the ratio is what our stage adds (gzip + JSON streaming, language sampling, held-out split, writing the HF
files; for shards, the uint32 arrays, index and atomic writes). Goals (issue 3): training >= 10 MB/s,
encoding >= 5 MB/s on 2 cores, overhead <= 10%.

    .venv/bin/python benchmarks/tokenizer.py [--mb 50] [--vocab 102400] [--workers 2]
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
    args = parser.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.workers)
    os.environ["CRAWL2SCORE_NO_BAR"] = "1"

    from tokenizers import pre_tokenizers, trainers

    from crawl2score.tokenizer.bpe import load_tokenizer, new_tokenizer, special_tokens
    from crawl2score.tokenizer.config import TokenizerConfig
    from crawl2score.tokenizer.shards import write_shards
    from crawl2score.tokenizer.synthetic import write_corpus
    from crawl2score.tokenizer.train import train_tokenizer

    cfg = TokenizerConfig(
        vocab_size=args.vocab, baseline=False, heldout_fraction=0.0, workers=args.workers, batch_docs=args.batch_docs
    )
    with tempfile.TemporaryDirectory(prefix="bench-tokenizer-") as tmp:
        tmp_path = Path(tmp)
        t = time.perf_counter()
        files = write_corpus(tmp_path / "corpus", int(args.mb * 1e6), files=4, seed=0)
        texts = [json.loads(line)["text"] for f in files for line in gzip.open(f, "rt", encoding="utf-8")]
        n_bytes = sum(len(x.encode("utf-8")) for x in texts)
        batches = [texts[i : i + args.batch_docs] for i in range(0, len(texts), args.batch_docs)]
        print(f"corpus: {n_bytes / 1e6:.1f} MB, {len(texts):,} docs ({time.perf_counter() - t:.0f} s)", flush=True)

        # Bare training: the same pre-tokenizer and trainer settings, text in memory, nothing written.
        tok = new_tokenizer("deepseek")
        trainer = trainers.BpeTrainer(
            vocab_size=args.vocab,
            min_frequency=cfg.min_frequency,
            show_progress=False,
            special_tokens=special_tokens(cfg.reserved_special_tokens),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        cpu: dict[str, float] = {}
        t, c = time.perf_counter(), time.process_time()
        tok.train_from_iterator(iter(batches), trainer=trainer)
        bare_train_s = time.perf_counter() - t
        cpu["bare_train"] = time.process_time() - c
        print(f"bare train: {bare_train_s:.1f} s, vocab {tok.get_vocab_size():,}", flush=True)

        t, c = time.perf_counter(), time.process_time()
        figures = train_tokenizer(cfg, files, tmp_path / "tokenizer")
        ours_train_s = time.perf_counter() - t
        cpu["train"] = time.process_time() - c
        print(f"ours train: {ours_train_s:.1f} s, vocab {figures['vocab_size']:,}", flush=True)

        enc = load_tokenizer(tmp_path / "tokenizer")
        t, c = time.perf_counter(), time.process_time()
        bare_tokens = sum(len(e.ids) for b in batches for e in enc.encode_batch_fast(b, add_special_tokens=False))
        bare_enc_s = time.perf_counter() - t
        cpu["bare_encode"] = time.process_time() - c
        print(f"bare encode: {bare_enc_s:.1f} s", flush=True)
        t, c = time.perf_counter(), time.process_time()
        manifest = write_shards(
            files, tmp_path / "tokenizer", tmp_path / "tokens", batch_docs=args.batch_docs, workers=args.workers
        )
        ours_enc_s = time.perf_counter() - t
        cpu["encode"] = time.process_time() - c
        assert manifest["num_tokens"] == bare_tokens + manifest["num_docs"]

    mb = n_bytes / 1e6
    result = {
        "corpus_mb": round(mb, 1),
        "vocab_size": figures["vocab_size"],
        "learned_size": figures["learned_size"],
        "workers": args.workers,
        "train_mb_s": round(mb / ours_train_s, 3),
        "bare_train_mb_s": round(mb / bare_train_s, 3),
        "train_ratio_to_bare": round(bare_train_s / ours_train_s, 3),
        "encode_mb_s": round(mb / ours_enc_s, 3),
        "bare_encode_mb_s": round(mb / bare_enc_s, 3),
        "encode_ratio_to_bare": round(bare_enc_s / ours_enc_s, 3),
        "cpu_seconds": {k: round(v, 1) for k, v in cpu.items()},
        "wall_seconds": {
            "bare_train": round(bare_train_s, 1),
            "train": round(ours_train_s, 1),
            "bare_encode": round(bare_enc_s, 1),
            "encode": round(ours_enc_s, 1),
        },
        "load_average": round(os.getloadavg()[0], 1),
        "tokens": manifest["num_tokens"],
        "bytes_per_token": round(n_bytes / bare_tokens, 3),
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
