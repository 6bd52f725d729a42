"""crawl2score.data.pipeline end to end on the sample corpus, plus remote inputs over loopback HTTP."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from crawl2score.data.groundtruth import score_dedup
from crawl2score.data.inputs import InputError, resolve_inputs
from crawl2score.data.pipeline import REMOVED_STEPS, run_data_stage
from crawl2score.data.sample import load_manifest

from .conftest import CRAWL_ID, small_config


def _assert_dedup_goals(workdir: Path, manifest: dict) -> dict:
    score = score_dedup(manifest, workdir)
    assert score["exact_duplicates"] >= 20 and score["near_pairs"] >= 10, score
    assert score["exact_removed_frac"] == 1.0, score
    assert score["near_removed_frac"] >= 0.95, score
    assert score["unique_removed_frac"] <= 0.01, score
    return score


def _check_layout(workdir: Path) -> dict:
    data = workdir / "data"
    stats = json.loads((data / "stats.json").read_text())
    outputs = sorted((data / "output").glob("*.jsonl.gz"))
    assert outputs
    with gzip.open(outputs[0], "rt") as f:
        doc = json.loads(f.readline())
    assert doc["text"] and doc["id"] and doc["metadata"]["url"] and doc["metadata"]["language"] in ("en", "zh")
    for step in REMOVED_STEPS:
        assert (data / "removed" / step).is_dir()
    assert not list(data.glob(".work-*")), "the work dir is removed once output is published"
    return stats


@pytest.fixture(scope="module", params=["resiliparse", "trafilatura"])
def sample_run(tmp_path_factory, request) -> tuple[Path, dict, dict]:
    """800 pages, 2 tasks on 2 worker processes (forkserver): ~1 min on 2 cores, per extractor."""
    workdir = tmp_path_factory.mktemp("run800")
    cfg = small_config(sample_pages=800, sample_seed=0, extractor=request.param, executor={"tasks": 2, "workers": 2})
    figures = run_data_stage(cfg, workdir)
    return workdir, figures, load_manifest(workdir / "data" / "sample" / "manifest.json")


def test_sample_corpus_dedup_goals(sample_run):
    workdir, figures, manifest = sample_run
    _assert_dedup_goals(workdir, manifest)


def test_stats_and_layout(sample_run):
    workdir, figures, manifest = sample_run
    stats = _check_layout(workdir)
    assert stats["input"]["skipped_huge"] == 1
    assert stats["input"]["skipped_non_html"] == manifest["counts"]["non_html:-"]
    steps = {row["step"]: row for row in stats["steps"]}
    assert steps["language"]["docs_out"] < steps["extract"]["docs_out"]  # de/fr/es dropped
    assert set(steps["language"]["by_language"]) == {"en", "zh"}
    assert stats["dedup"]["exact_removed"] > 0 and stats["dedup"]["near_removed"] > 0
    assert stats["dedup"]["exact_clusters"] > 0 and stats["dedup"]["near_clusters"] > 0
    assert figures["output_documents"] == stats["output"]["documents"] > 0
    # every step's docs_in is the previous step's docs_out
    rows = stats["steps"]
    assert all(b["docs_in"] == a["docs_out"] for a, b in zip(rows, rows[1:], strict=False))
    # junk is gone: no repeated spam line and no lorem ipsum survives
    out = "".join(gzip.open(p, "rt").read() for p in (workdir / "data" / "output").glob("*.gz"))
    assert "Lorem ipsum" not in out and "Buy cheap watches" not in out


@pytest.mark.slow
def test_full_default_sample(tmp_path):
    """The full 2,400-page default sample (~2.5 min on 2 cores)."""
    figures = run_data_stage(small_config(sample_pages=2400, executor={"tasks": 2, "workers": 2}), tmp_path)
    assert figures["output_documents"] > 1500
    _assert_dedup_goals(tmp_path, load_manifest(tmp_path / "data" / "sample" / "manifest.json"))


def test_local_inputs_and_corrupt_file(tmp_path, small_sample, shared_dir):
    data = (shared_dir / "data" / "commoncrawl" / "CC-MAIN-2020-34-sample16.warc.gz").read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.warc.gz").write_bytes(data[: len(data) // 3])
    cfg = small_config(input=[str(small_sample / "sample.warc.gz"), str(tmp_path / "in" / "*.warc.gz")])
    assert len(resolve_inputs(cfg)) == 2
    figures = run_data_stage(cfg, tmp_path / "w")
    assert figures["corrupt_files"] == 1 and figures["output_documents"] > 50


def test_zstd_warcs_are_read_with_and_without_a_dictionary(tmp_path, shared_dir):
    """`.warc.zst` as the IIPC layout writes it: one frame per record, optionally after a dictionary in a
    skippable frame; the same 16 pages as the gzip original."""
    import zstandard

    from crawl2score.data.steps import WarcStreamReader

    raw = gzip.decompress((shared_dir / "data" / "commoncrawl" / "CC-MAIN-2020-34-sample16.warc.gz").read_bytes())
    records = [b"WARC/1." + r for r in raw.split(b"WARC/1.")[1:]]
    dictionary = zstandard.train_dictionary(8192, records * 4)
    frame = zstandard.ZstdCompressor().compress(dictionary.as_bytes())
    with_dict = (0x184D2A5D).to_bytes(4, "little") + len(frame).to_bytes(4, "little") + frame
    with_dict += b"".join(zstandard.ZstdCompressor(dict_data=dictionary).compress(r) for r in records)
    (tmp_path / "dict.warc.zst").write_bytes(with_dict)
    (tmp_path / "plain.warc.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    paths = resolve_inputs(small_config(input=[str(tmp_path)]))
    assert [Path(p).name for p in paths] == ["dict.warc.zst", "plain.warc.zst"]
    for path in paths:
        docs = list(WarcStreamReader([path]).run())
        assert len(docs) == 16 and all(d.metadata["url"].startswith("http") for d in docs), path


def test_folder_with_some_bad_files_runs_and_one_with_none_good_stops(tmp_path, shared_dir, caplog):
    """A file named in `input` must be a WARC file; in a folder, a bad file among good ones is logged and
    left to the reader (counted corrupt), and a folder of only bad files is one line. Only the files kept
    after `max_files` are checked."""
    import logging
    import shutil

    good = shared_dir / "data" / "commoncrawl" / "CC-MAIN-2024-22-whirlwind.warc.gz"
    folder = tmp_path / "crawl"
    folder.mkdir()
    shutil.copy(good, folder / "a.warc.gz")
    (folder / "b.warc.gz").write_bytes(b"not a crawl")
    with caplog.at_level(logging.WARNING, logger="crawl2score.data"):
        assert len(resolve_inputs(small_config(input=[str(folder)]))) == 2
    assert "b.warc.gz: not a WARC file" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crawl2score.data"):
        assert len(resolve_inputs(small_config(input=[str(folder)]), warn=False)) == 2  # the CLI's pre-check
    assert "b.warc.gz" not in caplog.text
    with pytest.raises(InputError, match="b.warc.gz: not a WARC file"):
        resolve_inputs(small_config(input=[str(folder / "b.warc.gz")]))
    assert resolve_inputs(small_config(input=[str(folder)], max_files=1)) == [str(folder / "a.warc.gz")]
    (folder / "a.warc.gz").write_bytes(b"")
    with pytest.raises(InputError, match=r"a.warc.gz: empty file.*\(and 1 more: no input file is a WARC file\)"):
        resolve_inputs(small_config(input=[str(folder)]))


def test_missing_path_is_one_line_error(tmp_path, capsys):
    with pytest.raises(InputError, match="input not found"):
        resolve_inputs(small_config(input=[str(tmp_path / "nope.warc.gz")]))
    from crawl2score.cli import main

    code = main(["data", "--workdir", str(tmp_path / "w"), "--input", str(tmp_path / "nope.warc.gz")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "input not found" in err
    assert not (tmp_path / "w").exists()


def test_crawl_id_over_loopback_http(cc_server, tmp_path):
    cfg = small_config(input=[CRAWL_ID], cc_base_url=cc_server)
    paths = resolve_inputs(cfg)
    assert len(paths) == 2 and all(p.startswith(cc_server) for p in paths)
    assert resolve_inputs(small_config(input=[CRAWL_ID], cc_base_url=cc_server, max_files=1)) == paths[:1]
    figures = run_data_stage(cfg, tmp_path)
    assert figures["pages_read"] == 17  # 16 + 1 html responses, streamed over HTTP
    assert figures["docs_after_extract"] >= 8


def test_unknown_crawl_id_is_one_line_error(cc_server):
    with pytest.raises(InputError, match="unknown Common Crawl id CC-MAIN-1999-01") as info:
        resolve_inputs(small_config(input=["CC-MAIN-1999-01"], cc_base_url=cc_server))
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="input not found"):
        resolve_inputs(small_config(input=[f"{cc_server}/nothing/here.warc.gz"]))


def test_max_documents_limits_read(tmp_path, small_sample):
    cfg = small_config(input=[str(small_sample / "sample.warc.gz")], max_documents=40)
    assert run_data_stage(cfg, tmp_path)["pages_read"] == 40
