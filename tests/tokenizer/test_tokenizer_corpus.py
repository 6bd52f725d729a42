"""Reading and sampling the corpus: formats, order, held-out split, language weights, byte budget."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from crawl2score.tokenizer.corpus import (
    CorpusError,
    SampleStats,
    find_input_files,
    iter_documents,
    training_batches,
)


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def _records(n: int, lang: str) -> list[dict]:
    return [
        {"text": f"{lang} document {i} " * 5, "id": f"{lang}-{i}", "metadata": {"language": lang}} for i in range(n)
    ]


def test_formats_and_sorted_order(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _write_jsonl(tmp_path / "b.jsonl.gz", _records(2, "zh"))
    _write_jsonl(tmp_path / "a.jsonl", _records(2, "en"))
    pq.write_table(pa.Table.from_pylist(_records(1, "fr")), tmp_path / "c.parquet")
    (tmp_path / "d.txt").write_text("plain text file")
    (tmp_path / ".hidden.jsonl").write_text("not json")
    (tmp_path / "notes.csv").write_text("ignored")
    files = find_input_files(tmp_path)
    assert [f.name for f in files] == ["a.jsonl", "b.jsonl.gz", "c.parquet", "d.txt"]
    docs = list(iter_documents(files))
    assert [d.language for d in docs] == ["en", "en", "zh", "zh", "fr", "und"]
    assert docs[-1].text == "plain text file"
    assert [f.name for f in find_input_files(str(tmp_path / "*.jsonl*"))] == ["a.jsonl", "b.jsonl.gz"]


def test_missing_input_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=str(tmp_path)):
        find_input_files(tmp_path)


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(CorpusError, match=r"x.jsonl:2"):
        list(iter_documents(find_input_files(tmp_path)))


def _sample(docs, **kw):
    args = {
        "language_weights": {"en": 1.0, "zh": 1.0},
        "heldout_fraction": 0.0,
        "heldout_bytes": 10**9,
        "byte_budget": None,
        "seed": 0,
        "batch_docs": 7,
    }
    args.update(kw)
    stats, heldout = SampleStats(), {}
    texts = [t for b in training_batches(docs, stats=stats, heldout=heldout, **args) for t in b]
    return texts, stats, heldout


def test_language_weights_and_heldout_are_deterministic(tmp_path: Path) -> None:
    files = [_write_jsonl(tmp_path / "c.jsonl", _records(400, "en") + _records(400, "zh"))]
    texts, stats, heldout = _sample(
        iter_documents(files), language_weights={"en": 2.0, "zh": 0.25}, heldout_fraction=0.1
    )
    again, _, heldout2 = _sample(iter_documents(files), language_weights={"en": 2.0, "zh": 0.25}, heldout_fraction=0.1)
    assert texts == again and heldout == heldout2
    en = sum(t.startswith("en") for t in texts)
    zh = sum(t.startswith("zh") for t in texts)
    assert stats.heldout_docs == sum(len(v) for v in heldout.values())
    assert 20 < stats.heldout_docs < 140
    assert en == 2 * (400 - len(heldout["en"]))
    assert 40 < zh < 140  # ~25% of ~360
    assert not set(texts) & {t for v in heldout.values() for t in v}


def test_byte_budget_stops_reading(tmp_path: Path) -> None:
    files = [_write_jsonl(tmp_path / "c.jsonl", _records(100, "en"))]
    texts, stats, _ = _sample(iter_documents(files), byte_budget=1000)
    assert stats.budget_reached and stats.bytes_used <= 1000
    assert sum(len(t.encode()) for t in texts) == stats.bytes_used
    assert stats.docs_read < 100
