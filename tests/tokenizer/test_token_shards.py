"""Shards and their reader: counts equal the encoded documents, boundaries and windows are right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crawl2score.model.shards import TokenShards
from crawl2score.tokenizer.bpe import encode_texts, load_tokenizer
from crawl2score.tokenizer.corpus import iter_documents
from crawl2score.tokenizer.shards import write_shards


@pytest.fixture(scope="module")
def tokens(tmp_path_factory, trained, small_corpus):
    out = tmp_path_factory.mktemp("tok") / "tokens"
    manifest = write_shards(small_corpus, trained[0], out, shard_tokens=50_000, batch_docs=16)
    return out, manifest


def test_both_encoders_write_identical_shards(tokens, tmp_path: Path, trained, small_corpus) -> None:
    """The default (tiktoken) and HF tokenizers: byte-identical .bin and .idx files."""
    out, manifest = tokens
    assert manifest["encoder"] == "tiktoken"
    hf = write_shards(
        small_corpus, trained[0], tmp_path / "hf", shard_tokens=50_000, batch_docs=16, encoder="tokenizers"
    )
    assert hf["encoder"] == "tokenizers" and len(hf["shards"]) == len(manifest["shards"]) > 1
    same = ("vocab_size", "bos_id", "eos_id", "pad_id", "num_tokens", "tokens_per_language", "shards")
    assert {k: hf[k] for k in same} == {k: manifest[k] for k in same}
    for shard in manifest["shards"]:
        for name in (shard["path"], shard["index"]):
            assert (out / name).read_bytes() == (tmp_path / "hf" / name).read_bytes(), name


def test_manifest_counts_equal_encoded_documents(tokens, trained, small_corpus) -> None:
    out, manifest = tokens
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["shards"] == manifest["shards"]
    tok = load_tokenizer(trained[0])
    docs = list(iter_documents(small_corpus))
    encoded = encode_texts(tok, [d.text for d in docs])
    assert on_disk["num_docs"] == len(docs)
    assert on_disk["num_tokens"] == sum(len(x) + 1 for x in encoded)
    assert on_disk["num_tokens"] == sum(s["num_tokens"] for s in on_disk["shards"])
    per_lang: dict[str, int] = {}
    for d, x in zip(docs, encoded, strict=True):
        per_lang[d.language] = per_lang.get(d.language, 0) + len(x) + 1
    assert on_disk["tokens_per_language"] == per_lang
    assert on_disk["dtype"] == "uint32" and on_disk["vocab_size"] == trained[1]["vocab_size"]
    assert on_disk["tokenizer_hash"] == trained[1]["tokenizer_hash"]
    assert len(on_disk["shards"]) > 1  # 50k-token shards: the corpus spans several
    for s in on_disk["shards"][:-1]:
        assert s["num_tokens"] >= 50_000


def test_documents_and_boundaries(tokens, trained, small_corpus) -> None:
    out, _ = tokens
    shards = TokenShards(out)
    tok = load_tokenizer(trained[0])
    docs = list(iter_documents(small_corpus))
    assert shards.num_docs == len(docs)
    for k in (0, 1, len(docs) // 2, len(docs) - 1):
        ids = shards.document(k)
        assert ids[-1] == shards.eos_id and shards.eos_id not in ids[:-1]
        assert tok.decode(ids[:-1].tolist()) == docs[k].text
    stream = np.concatenate([shards.document(k) for k in range(shards.num_docs)])
    assert len(stream) == shards.num_tokens
    assert (stream == shards.eos_id).sum() == shards.num_docs


def test_reader_windows_and_doc_ids(tokens) -> None:
    out, _ = tokens
    shards = TokenShards(out)
    stream = shards.tokens(0, shards.num_tokens)
    starts = np.concatenate([[0], np.cumsum([len(shards.document(k)) for k in range(shards.num_docs)])])
    seq_len = 1000
    n = shards.num_sequences(seq_len)
    assert n == (shards.num_tokens - 1) // seq_len
    for i in (0, 1, n // 2, n - 1):  # some of these cross shard boundaries (50k-token shards)
        seq = shards.sequence(i, seq_len)
        assert seq.dtype == np.int64 and len(seq) == seq_len + 1
        assert np.array_equal(seq, stream[i * seq_len : i * seq_len + seq_len + 1])
        docs = shards.doc_ids(i, seq_len)
        positions = np.arange(i * seq_len, i * seq_len + seq_len + 1)
        assert np.array_equal(docs, np.searchsorted(starts, positions, side="right") - 1)
        # A document id changes exactly after each EOS.
        assert np.array_equal(np.flatnonzero(np.diff(docs)), np.flatnonzero(seq[:-1] == shards.eos_id))
    assert np.array_equal(shards.sequence(0, seq_len)[-1:], shards.sequence(1, seq_len)[:1])
    with pytest.raises(IndexError):
        shards.sequence(n, seq_len)
    assert shards.vocab_size == 2048 and (shards.bos_id, shards.eos_id) == (0, 1)
    assert int(stream.max()) < shards.vocab_size


def test_shards_are_deterministic_and_atomic(tmp_path: Path, tokens, trained, small_corpus) -> None:
    out, _ = tokens
    again = tmp_path / "tokens"
    write_shards(small_corpus, trained[0], again, shard_tokens=50_000, batch_docs=64)  # other batching
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    assert not [n for n in names if n.startswith(".")]  # no temporaries left behind
    for name in names:
        if name != "manifest.json":
            assert (out / name).read_bytes() == (again / name).read_bytes(), name


def test_failed_run_keeps_previous_output(tmp_path: Path, trained, small_corpus) -> None:
    out = tmp_path / "tokens"
    write_shards(small_corpus[:1], trained[0], out, shard_tokens=50_000)
    before = (out / "manifest.json").read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(ValueError):
        write_shards([bad], trained[0], out)
    assert (out / "manifest.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_corpus_with_no_text_fails_instead_of_writing_empty_shards(tmp_path: Path, trained) -> None:
    """Empty documents only: once a completed stage with 0 tokens, found only by the trainer."""
    from crawl2score.tokenizer.corpus import CorpusError

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.jsonl").write_text('{"text": ""}\n\n{"text": ""}\n')
    with pytest.raises(CorpusError, match=r"corpus/a.jsonl: no text to encode in 1 file\(s\)"):
        write_shards([tmp_path / "corpus" / "a.jsonl"], trained[0], tmp_path / "tokens")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


def test_reader_imports_only_numpy() -> None:
    code = (
        "import sys, model.shards; bad = {'tokenizers', 'datasets', 'prefect', 'transformers'}"
        " & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_heldout_documents_stay_out_of_the_shards(tmp_path: Path, trained, small_corpus, small_cfg) -> None:
    """The tokenizer's held-out split is never trained on by the model either: its documents are not in
    the shards, so held-out bits per byte measures text the model has not seen."""
    from crawl2score.tokenizer.corpus import unit_hash

    manifest = write_shards(
        small_corpus,
        trained[0],
        tmp_path / "tokens",
        shard_tokens=50_000,
        heldout_fraction=small_cfg.heldout_fraction,
        seed=small_cfg.seed,
    )
    docs = list(iter_documents(small_corpus))
    held = [d for d in docs if unit_hash(small_cfg.seed, "heldout", d.id) < small_cfg.heldout_fraction]
    kept = [d for d in docs if d not in held]
    assert held and manifest["heldout_docs_left_out"] == len(held)
    assert manifest["num_docs"] == len(kept)
    shards = TokenShards(tmp_path / "tokens")
    tok = load_tokenizer(trained[0])
    first_kept = encode_texts(tok, [kept[0].text])[0]
    assert shards.document(0).tolist()[: len(first_kept)] == first_kept
