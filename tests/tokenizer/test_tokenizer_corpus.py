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


def test_lone_surrogate_names_file_and_line(tmp_path: Path) -> None:
    """JSON can escape half of a UTF-16 pair; no stage can encode that text (it was a UnicodeEncodeError
    traceback from the sampler). A whole pair and plain Chinese escapes are fine."""
    (tmp_path / "x.jsonl").write_text('{"text": "\\ud83d\\ude00 \\u4e2d"}\n{"text": "ab\\ud800cd"}\n')
    with pytest.raises(CorpusError, match=r"x.jsonl:2: 'text' holds a lone surrogate"):
        list(iter_documents(find_input_files(tmp_path)))
    (tmp_path / "x.jsonl").write_text('{"text": "\\ud83d\\ude00 \\u4e2d"}\n')
    assert [d.text for d in iter_documents(find_input_files(tmp_path))] == ["😀 中"]


def test_zstd_corpus_of_several_frames_reads_whole(tmp_path: Path) -> None:
    """A .jsonl.zst as concatenated writers leave it (frames back to back), larger than one read."""
    import random

    import zstandard

    rng = random.Random(0)  # incompressible text, so the file spans several 1 MiB reads
    records = [{"text": "".join(rng.choices("abcdefghij klmn", k=2000)), "id": str(i)} for i in range(1500)]
    lines = [json.dumps(r) + "\n" for r in records]
    half = len(lines) // 2
    cctx = zstandard.ZstdCompressor()
    data = cctx.compress("".join(lines[:half]).encode()) + cctx.compress("".join(lines[half:]).encode())
    assert len(data) > 1 << 20
    (tmp_path / "c.jsonl.zst").write_bytes(data)
    docs = list(iter_documents(find_input_files(tmp_path)))
    assert [d.text for d in docs] == [r["text"] for r in records]


def test_zstd_reader_holds_a_bounded_buffer_on_extreme_ratios() -> None:
    """zstd inflates a run of one line ~10,000-fold: reading a little must not inflate the whole file."""
    import io

    import zstandard

    from crawl2score.tokenizer.corpus import _ZstdFrames

    data = zstandard.ZstdCompressor(level=19).compress(b'{"text": "aaaa"}\n' * 10_000_000)  # 170 MB inflated
    reader = io.BufferedReader(_ZstdFrames(io.BytesIO(data)))
    assert reader.read(100).startswith(b'{"text": "aaaa"}')
    assert len(reader.raw._out) < 32 << 20


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("list.jsonl", b"[1, 2]\n", "list.jsonl:1: not a JSON object (a list)"),
        ("null.jsonl", b'{"text": "ok"}\nnull\n', "null.jsonl:2: not a JSON object (a NoneType)"),
        (
            "cut.jsonl",
            b'{"text": "a line cut sho',
            "cut.jsonl:1: not valid JSON (Unterminated string starting at: line 1",
        ),
    ],
)
def test_jsonl_line_that_is_no_record_names_file_and_line(tmp_path: Path, name, content, needle) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CorpusError) as caught:
        list(iter_documents(find_input_files(tmp_path)))
    assert needle in str(caught.value)


def test_parquet_row_without_string_text_is_an_error_as_in_jsonl(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["fine", None]}), tmp_path / "a.parquet")
    with pytest.raises(CorpusError, match=r"a.parquet: row 1: no string 'text' \(a NoneType\)"):
        list(iter_documents(find_input_files(tmp_path)))


def test_parquet_read_error_is_one_line(tmp_path: Path) -> None:
    """pyarrow's message for a file missing its head spans lines and holds raw bytes; ours is one line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a document"] * 100}), tmp_path / "whole.parquet")
    (tmp_path / "a.parquet").write_bytes((tmp_path / "whole.parquet").read_bytes()[8:])
    (tmp_path / "whole.parquet").unlink()
    with pytest.raises(CorpusError) as caught:
        list(iter_documents(find_input_files(tmp_path)))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'a.parquet'}: cannot be read (") and message.isprintable(), message


def _broken_files() -> dict[str, tuple[bytes, str]]:
    """A file of each readable kind, broken the ways files break: (content, what the error says)."""
    import zstandard

    good = gzip.compress(b'{"text": "a document"}\n' * 200)
    flipped = good[:12] + bytes([good[12] ^ 0xFF]) + good[13:]
    return {
        "not-gzip.jsonl.gz": (b"<html>an error page saved as .gz</html>", "Not a gzipped file"),
        "cut.jsonl.gz": (good[: len(good) // 2], "cannot be read"),
        "bad-deflate.jsonl.gz": (flipped, "cannot be read"),
        "cut.jsonl.zst": (
            zstandard.ZstdCompressor().compress(b'{"text": "a document"}\n' * 200)[:20],
            "cannot be read",
        ),
        "not-parquet.parquet": (b"PAR1 then nothing of a parquet file", "cannot be read"),
        "cut.txt.gz": (gzip.compress(b"plain text " * 500)[:30], "cannot be read"),
    }


@pytest.mark.parametrize("name", list(_broken_files()))
def test_unreadable_file_names_itself(tmp_path: Path, name: str) -> None:
    """One broken file among good ones: the error names it (the library's message alone names none)."""
    content, needle = _broken_files()[name]
    _write_jsonl(tmp_path / "a-good.jsonl", _records(3, "en"))
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CorpusError) as caught:
        list(iter_documents(find_input_files(tmp_path)))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / name}: cannot be read (") and needle in message, message
    assert "\n" not in message


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
