"""The end-to-end flow on the embedded default, under a Prefect test server: every stage runs, writes its
figures into the report; a second run with the same config skips every stage; a changed setting or a
changed line of a stage's code redoes that stage and every later one, and nothing before it."""

from __future__ import annotations

import json

import pytest

from crawl2score.config import load_config
from crawl2score.workdir import STAGES
from tests.fast_run import FAST_RUN


def test_pipeline_end_to_end_then_skips(tmp_path, prefect_harness, monkeypatch) -> None:
    from crawl2score import workdir
    from crawl2score.flows.pipeline import HEADLINES, pipeline
    from crawl2score.workdir import StageNameError, flatten_figures

    # Stand-in for a line of the data stage's code: one more file counted in its code version, which the
    # test edits later as a developer edits a filter threshold.
    threshold = tmp_path / "threshold.py"
    threshold.write_text("MIN_WORDS = 50\n")
    monkeypatch.setitem(workdir.STAGE_CODE, "data", (*workdir.STAGE_CODE["data"], str(threshold)))
    workdir.code_version.cache_clear()

    cfg = load_config("tiny", FAST_RUN, workdir=tmp_path / "work")
    first = pipeline(config=cfg)
    assert [s for s in first["stages"]] == list(STAGES)
    assert not any(r["skipped"] for r in first["stages"].values())
    report = json.loads((tmp_path / "work" / "report.json").read_text())
    assert set(report) >= set(STAGES)
    assert (tmp_path / "work" / "report.md").read_text().startswith("# crawl2score report")
    # bits per byte beside the math score: held-out text from the tokenizer stage, the public text
    for text in ("heldout_en", "heldout_zh", "public"):
        assert report["eval"][f"bpb_{text}"]["bits_per_byte"] > 0, text
    # every headline figure of the run summary names a figure the stage writes (two did not)
    for stage, wanted in HEADLINES.items():
        flat = flatten_figures(report[stage])
        for want in wanted:
            found = (
                [k for k in flat if k.endswith(want[1:])] if want.startswith("*") else [k for k in flat if k == want]
            )
            assert found, (stage, want, sorted(flat))
    with pytest.raises(StageNameError, match="unknown stage 'tokenz'"):
        pipeline(config=cfg, stages=["tokenz"])

    second = pipeline(config=cfg)
    assert all(r["skipped"] for r in second["stages"].values())
    assert {s: r["key"] for s, r in second["stages"].items()} == {s: r["key"] for s, r in first["stages"].items()}

    forced = pipeline(config=cfg, force=["eval"], stages=["eval"])
    assert list(forced["stages"]) == ["eval"] and not forced["stages"]["eval"]["skipped"]

    def redone(result) -> list[str]:
        return [s for s, r in result["stages"].items() if not r["skipped"]]

    # A tokenizer setting: the tokenizer and everything after it redo; the data stage is current.
    # (as a deployment run changes one key: `overrides`, the deployed config otherwise as it is)
    retuned = cfg.model_copy(update={"tokenizer": cfg.tokenizer.model_copy(update={"seed": 1})})
    assert redone(pipeline(config=cfg, overrides=["tokenizer.seed=1"])) == [
        "tokenizer",
        "tokens",
        "train",
        "eval",
    ]

    # The data stage's code: every stage redoes.
    threshold.write_text("MIN_WORDS = 40\n")
    workdir.code_version.cache_clear()
    assert redone(pipeline(config=retuned)) == list(STAGES)
    workdir.code_version.cache_clear()
