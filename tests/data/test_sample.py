"""crawl2score.data.sample: deterministic, big enough, ground truth that means something."""

from __future__ import annotations

import hashlib

from crawl2score.data.sample import build_pages, edit_text, shingle_jaccard, write_sample


def test_same_seed_same_bytes(tmp_path):
    a = write_sample(tmp_path / "a", pages=120, seed=7)
    b = write_sample(tmp_path / "b", pages=120, seed=7)
    assert a == b
    digest = [hashlib.sha256((tmp_path / d / "sample.warc.gz").read_bytes()).hexdigest() for d in "ab"]
    assert digest[0] == digest[1]


def test_default_sample_has_every_kind():
    pages = build_pages()
    html = [p for p in pages if p.kind != "non_html"]
    assert len(html) >= 2000
    kinds = {(p.kind, p.language) for p in pages}
    for kind in ("unique", "exact_copy", "near_copy"):
        assert (kind, "en") in kinds and (kind, "zh") in kinds
    assert {"de", "fr", "es"} <= {p.language for p in pages if p.kind == "other_language"}
    assert any(p.kind == "huge" for p in pages) and any(p.kind == "junk" for p in pages)
    rates = {p.edit_rate for p in pages if p.kind == "near_copy"}
    assert len(rates) >= 4
    near = [p.jaccard for p in pages if p.kind == "near_copy"]
    assert sum(j >= 0.8 for j in near) >= 40 and sum(j < 0.7 for j in near) >= 40  # both sides of the threshold


def test_edit_rate_lowers_jaccard():
    import random

    from crawl2score.data.sample import english_doc

    base = english_doc(random.Random(1))
    sims = [shingle_jaccard(base, edit_text(base, "en", r, random.Random(2))) for r in (0.005, 0.05, 0.2)]
    assert sims[0] > sims[1] > sims[2]
    assert shingle_jaccard(base, base) == 1.0


def test_cli_sample_data(tmp_path, capsys):
    from crawl2score.cli import main

    assert main(["sample-data", str(tmp_path / "s"), "--pages", "100", "--seed", "1"]) == 0
    assert (tmp_path / "s" / "sample.warc.gz").is_file() and (tmp_path / "s" / "manifest.json").is_file()
    assert main(["sample-data", str(tmp_path / "t"), "--pages", "5"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
