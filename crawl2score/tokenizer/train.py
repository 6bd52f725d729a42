"""Train the project tokenizer from the streamed corpus and write WORKDIR/tokenizer/ with its report.

Plain Python (no Prefect): `tasks/tokenizer.py` wraps it with logging and artifacts. The output directory is
built under a temporary name and renamed into place, so a crash leaves the previous tokenizer intact.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from crawl2score.config.tokenizer import TokenizerConfig
from crawl2score.tokenizer.bpe import (
    TrainedBPE,
    encode_texts,
    load_tokenizer,
    save_hf,
    set_threads,
    special_ids,
    special_tokens,
    train_bpe,
)
from crawl2score.tokenizer.chat import write_chat_template, write_heldout
from crawl2score.tokenizer.corpus import CorpusError, SampleStats, corpus_location, iter_documents, training_batches
from crawl2score.tokenizer.encode import Encoder, load_encoder, write_ranks_cache
from crawl2score.tokenizer.ranks import train_numba, train_rustbpe
from crawl2score.tokenizer.shards import prefetch
from crawl2score.workdir import atomic_dir, atomic_write_json, file_hash

log = logging.getLogger("crawl2score.tokenizer")

REPORT_LANGUAGES = ("en", "zh")
INFO_FILE = "crawl2score_tokenizer.json"


class EncoderMismatchError(RuntimeError):
    """The fast encoder does not reproduce the HF tokenizer's ids on the held-out text."""


def _stream(
    files: list[Path], cfg: TokenizerConfig, stats: SampleStats, heldout: dict[str, list[str]], on_file: Callable
) -> Iterator[list[str]]:
    """Training batches, read and sampled in a thread while the trainer counts the previous ones."""
    return prefetch(_batches(files, cfg, stats, heldout, on_file))


def _batches(
    files: list[Path], cfg: TokenizerConfig, stats: SampleStats, heldout: dict[str, list[str]], on_file: Callable
) -> Iterator[list[str]]:
    return training_batches(
        iter_documents(files, on_file_done=on_file),
        language_weights=cfg.language_weights,
        heldout_fraction=cfg.heldout_fraction,
        heldout_bytes=cfg.heldout_bytes,
        byte_budget=cfg.byte_budget,
        seed=cfg.seed,
        batch_docs=cfg.batch_docs,
        stats=stats,
        heldout=heldout,
    )


def evaluate(
    tok: Tokenizer, heldout: dict[str, list[str]], vocab_size: int, same_ids: Encoder | None = None
) -> dict[str, Any]:
    """Bytes per token on held-out text per language (higher = better compression) and vocabulary usage.

    Usage is the fraction of ids that occur in the held-out encodings: a vocabulary full of entries that
    never occur on unseen text is wasted embedding rows. `same_ids`: an encoder that must give the same
    ids on all of it (the shards' tiktoken), else :class:`EncoderMismatchError`.
    """
    used: set[int] = set()
    per_lang: dict[str, Any] = {}
    for lang in sorted(heldout):
        texts = heldout[lang]
        ids = encode_texts(tok, texts)
        if same_ids is not None and [list(x) for x in same_ids.encode_batch(texts)] != ids:
            raise EncoderMismatchError(
                f"tokenizer: {same_ids.name} and tokenizers give different ids on held-out {lang} text; "
                "set tokenizer.encoder: tokenizers"
            )
        n_tokens = sum(len(x) for x in ids)
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        lang_used = {i for x in ids for i in x}
        used |= lang_used
        per_lang[lang] = {
            "docs": len(texts),
            "bytes": n_bytes,
            "tokens": n_tokens,
            "bytes_per_token": n_bytes / n_tokens if n_tokens else None,
            "vocab_used": len(lang_used) / vocab_size,
        }
    return {"languages": per_lang, "vocab_used": len(used) / vocab_size}


def _shortfall_banner(result: TrainedBPE, requested: int) -> str:
    line = "!" * 100
    return (
        f"\n{line}\nTOKENIZER VOCABULARY SHORT: BPE learned {result.learned_size:,} of {requested:,} entries "
        f"(corpus too small).\n{result.filler_tokens:,} unused reserved tokens were appended so ids still span "
        f"{requested:,}; set tokenizer.require_exact_vocab=true to fail instead, or give more data.\n{line}"
    )


def _train(cfg: TokenizerConfig, batches: Iterator[list[str]], kind: str, require_exact: bool) -> TrainedBPE:
    """One BPE with the configured trainer; both return the same HF tokenizer layout."""
    if cfg.trainer == "numba":
        return train_numba(
            batches,
            cfg.vocab_size,
            reserved=cfg.reserved_special_tokens,
            kind=kind,
            require_exact=require_exact,
            workers=cfg.workers,
        )
    if cfg.trainer == "rustbpe":
        return train_rustbpe(
            batches, cfg.vocab_size, reserved=cfg.reserved_special_tokens, kind=kind, require_exact=require_exact
        )
    return train_bpe(
        batches,
        cfg.vocab_size,
        reserved=cfg.reserved_special_tokens,
        min_frequency=cfg.min_frequency,
        max_token_length=cfg.max_token_length,
        kind=kind,
        require_exact=require_exact,
    )


def train_tokenizer(
    cfg: TokenizerConfig,
    files: list[Path],
    out_dir: str | Path,
    on_progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Train (and the baseline, if configured), evaluate on held-out text, write out_dir. Returns figures."""
    set_threads(cfg.workers)
    n_files = len(files)
    passes = 2 if cfg.baseline else 1
    done_files = [0]

    def on_file(_path: Path) -> None:
        done_files[0] += 1
        if on_progress is not None:
            on_progress(min(1.0, done_files[0] / (n_files * passes)))

    stats, heldout = SampleStats(), {}
    if cfg.trainer == "numba":  # its one-time compile is not training time (and is logged when it happens)
        from crawl2score.tokenizer.merge_loop import compile_loop

        compile_loop()
    bar = _bar(cfg.byte_budget, "tokenizer: read+count")
    t0 = time.perf_counter()
    result = _train(
        cfg, _tracked(_stream(files, cfg, stats, heldout, on_file), bar, stats), "deepseek", cfg.require_exact_vocab
    )
    train_s = time.perf_counter() - t0
    bar.close()
    if stats.docs_used == 0:
        raise CorpusError(
            f"{corpus_location(files, 'tokenizer input')}: no training text in {n_files} file(s) (every document empty, held out or weighted 0 "
            "by tokenizer.language_weights)"
        )
    if result.filler_tokens:
        log.warning(_shortfall_banner(result, cfg.vocab_size))

    baseline = None
    if cfg.baseline:
        base_stats = SampleStats()
        bar = _bar(cfg.byte_budget, "baseline: read+count")
        baseline = _train(
            cfg, _tracked(_stream(files, cfg, base_stats, {}, on_file), bar, base_stats), "bytelevel", False
        )
        bar.close()

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        save_hf(result.tokenizer, tmp)
        write_chat_template(tmp)
        write_heldout(tmp, heldout)
        if baseline is not None:
            (tmp / "baseline").mkdir()
            baseline.tokenizer.save(str(tmp / "baseline" / "tokenizer.json"))
        ids = special_ids(result.tokenizer)
        # Evaluate what was written (encode_special_tokens on), exactly as the shards will be encoded.
        # The shards' encoder must give these same ids: checked on all held-out text before any shard is
        # written (tests pin it on arbitrary text; a failure here stops the stage rather than the model).
        # Without held-out text there is nothing to check: the tokens stage then resolves `auto` itself.
        encoder_name, same_ids = cfg.encoder, None
        if cfg.encoder != "tokenizers":
            write_ranks_cache(tmp)  # tiktoken's ranks, so each shard run skips parsing tokenizer.json
            if heldout:
                encoder = load_encoder(tmp, cfg.encoder, cfg.workers)
                encoder_name, same_ids = encoder.name, (encoder if encoder.name == "tiktoken" else None)
        ours = evaluate(load_tokenizer(tmp), heldout, cfg.vocab_size, same_ids=same_ids)
        base = evaluate(baseline.tokenizer, heldout, cfg.vocab_size) if baseline is not None else None
        figures: dict[str, Any] = {
            "vocab_size": result.vocab_size,
            "learned_size": result.learned_size,
            "filler_tokens": result.filler_tokens,
            "num_merges": result.num_merges,
            **ids,
            "special_tokens": len(special_tokens(cfg.reserved_special_tokens)),
            "train_docs": stats.docs_used,
            "train_bytes": stats.bytes_used,
            "train_bytes_per_language": dict(stats.bytes_used_per_language),
            "budget_reached": stats.budget_reached,
            "heldout_docs": stats.heldout_docs,
            "train_seconds": round(train_s, 2),
            "train_mb_per_s": round(stats.bytes_used / 1e6 / train_s, 3),
            "trainer": cfg.trainer,
            "tokenizer_hash": file_hash(tmp / "tokenizer.json"),
            "encoder": encoder_name,
            "heldout": _compare(ours, base),
        }
        info = {
            "vocab_size": result.vocab_size,
            **ids,
            "special_tokens": special_tokens(cfg.reserved_special_tokens),
            "filler_tokens": [result.tokenizer.id_to_token(i) for i in range(result.learned_size, result.vocab_size)],
            "learned_size": result.learned_size,
            "pre_tokenizer": "deepseek: digits alone | CJK runs | GPT-style regex; byte level",
            "trainer": cfg.trainer,
            "config": cfg.model_dump(mode="json"),
        }
        atomic_write_json(tmp / INFO_FILE, info)
        atomic_write_json(tmp / "report.json", figures)
    if on_progress is not None:
        on_progress(1.0)
    return figures


def _compare(ours: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    """The report's held-out section: our figures next to the baseline's, per language."""
    out: dict[str, Any] = {"vocab_used": ours["vocab_used"]}
    if base is not None:
        out["baseline_vocab_used"] = base["vocab_used"]
    for lang, fig in ours["languages"].items():
        row = {"docs": fig["docs"], "bytes": fig["bytes"], "bytes_per_token": fig["bytes_per_token"]}
        if base is not None:
            row["baseline_bytes_per_token"] = base["languages"][lang]["bytes_per_token"]
        out[lang] = row
    for lang in REPORT_LANGUAGES:
        if lang not in out:
            log.warning("tokenizer report: no held-out %s text (raise heldout_fraction or add %s data)", lang, lang)
            out[lang] = None
    return out


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int | None, desc: str) -> Any:
    """A terminal progress bar over bytes read (tqdm on stderr; silent when stderr is not a terminal)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency, but the stage must not fail on a cosmetic feature
        return _NoBar()
    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        disable=True if os.environ.get("CRAWL2SCORE_NO_BAR") == "1" else None,
        leave=False,
    )


def _tracked(batches: Iterator[list[str]], bar: Any, stats: SampleStats) -> Iterator[list[str]]:
    last = 0
    for batch in batches:
        bar.update(stats.bytes_used - last)
        last = stats.bytes_used
        yield batch


def read_info(tokenizer_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(tokenizer_dir) / INFO_FILE).read_text())
