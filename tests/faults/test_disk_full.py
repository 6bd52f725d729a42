"""A full disk while the tokenize stage writes its shards: one-line error, the previous `tokens/` intact,
no temporary directory left, and the next run completes with the same shards as a run that never failed.
(Full disk during a checkpoint write: tests/faults/test_train_faults.py.)

ENOSPC is injected at the shard writer's single write call: no tmpfs can be mounted without privileges.
"""

from __future__ import annotations

import errno
import json

import pytest

from crawl2score.tokenizer import shards


@pytest.fixture(scope="module")
def corpus_and_tokenizer(tmp_path_factory):
    from crawl2score.tokenizer.bpe import save_hf, train_bpe

    tmp = tmp_path_factory.mktemp("diskfull")
    texts = [f"Document {i}: the quick brown fox {i * 7} jumps; 狐狸跳过了懒狗 {i}." for i in range(400)]
    corpus = tmp / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": t, "id": str(i)}) + "\n" for i, t in enumerate(texts)))
    trained = train_bpe([texts], 3 + 256 + 64, reserved=0)
    save_hf(trained.tokenizer, tmp / "tokenizer")
    return [corpus], tmp / "tokenizer"


def _write(files, tok, out):
    return shards.write_shards(files, tok, out, shard_tokens=2000, batch_docs=50, workers=1)


def _tree(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_enospc_while_writing_shards(tmp_path, monkeypatch, corpus_and_tokenizer):
    files, tok = corpus_and_tokenizer
    out = tmp_path / "tokens"
    first = _write(files, tok, out)
    assert len(first["shards"]) > 2
    before = _tree(out)

    real_write, calls = shards._ShardWriter._write, [0]

    def write_until_full(self, arr):
        calls[0] += 1
        if calls[0] == 4:  # a few shards in: partial output exists when the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, arr)

    monkeypatch.setattr(shards._ShardWriter, "_write", write_until_full)
    with pytest.raises(OSError) as info:
        _write(files, tok, out)
    assert info.value.errno == errno.ENOSPC and "\n" not in str(info.value)
    assert _tree(out) == before  # the earlier output, byte for byte
    assert [p.name for p in tmp_path.iterdir()] == ["tokens"]  # no temporary directory left behind

    monkeypatch.setattr(shards._ShardWriter, "_write", real_write)
    again = _write(files, tok, out)
    assert again["shards"] == first["shards"] and _tree(out) == before
