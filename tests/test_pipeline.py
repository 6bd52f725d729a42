"""The end-to-end flow on the embedded default, under a Prefect test server: every stage runs, writes its
figures into the report, and a second run with the same config skips every stage."""

from __future__ import annotations

import json

from crawl2score.config import load_config
from crawl2score.workdir import STAGES


def test_pipeline_end_to_end_then_skips(tmp_path, prefect_harness) -> None:
    from crawl2score.flows.pipeline import pipeline

    cfg = load_config(
        "tiny",
        [
            "data.sample_pages=600",
            "train.steps=4",
            "train.checkpoint_every=2",
            "train.log_every=1",
            "eval.limit=1",
            "eval.max_new_tokens=8",
            "eval.benchmarks=[math500]",
            "eval.bpb_max_bytes=5000",
        ],
        workdir=tmp_path / "work",
    )
    first = pipeline(config=cfg)
    assert [s for s in first["stages"]] == list(STAGES)
    assert not any(r["skipped"] for r in first["stages"].values())
    report = json.loads((tmp_path / "work" / "report.json").read_text())
    assert set(report) >= set(STAGES)
    assert (tmp_path / "work" / "report.md").read_text().startswith("# crawl2score report")
    # bits per byte beside the math score: held-out text from the tokenizer stage, the public text
    for text in ("heldout_en", "heldout_zh", "public"):
        assert report["eval"][f"bpb_{text}"]["bits_per_byte"] > 0, text

    second = pipeline(config=cfg)
    assert all(r["skipped"] for r in second["stages"].values())
    assert {s: r["key"] for s, r in second["stages"].items()} == {s: r["key"] for s, r in first["stages"].items()}

    forced = pipeline(config=cfg, force=["eval"], stages=["eval"])
    assert list(forced["stages"]) == ["eval"] and not forced["stages"]["eval"]["skipped"]
