"""tasks/data.py alone and flows/data.py under Prefect's test harness."""

from __future__ import annotations

import json

from crawl2score.config import Config

from .conftest import small_config


def _config(tmp_path, **data) -> Config:
    return Config(workdir=str(tmp_path / "work"), data=small_config(**data))


def test_tasks_alone(tmp_path, small_sample):
    from crawl2score.tasks.data import data_inputs_task, data_task, write_sample_data

    counts = write_sample_data.fn(str(tmp_path / "s"), pages=100, seed=1)
    assert counts["pages"] == 100
    cfg = _config(tmp_path, input=[str(small_sample / "sample.warc.gz")])
    inputs = data_inputs_task.fn(cfg.data, cfg.workdir)
    assert inputs == [str(small_sample / "sample.warc.gz")]
    figures = data_task.fn(cfg.data, cfg.workdir, inputs, "k")
    assert figures["output_documents"] > 50


def test_flow_runs_then_skips(tmp_path, prefect_harness):
    from crawl2score.flows.data import data_flow

    cfg = _config(tmp_path)  # no input: the flow generates the sample under WORKDIR/data/sample/
    first = data_flow(config=cfg)
    assert not first["skipped"] and first["figures"]["output_documents"] > 50
    assert (tmp_path / "work" / "data" / "sample" / "sample.warc.gz").is_file()
    report = json.loads((tmp_path / "work" / "report.json").read_text())
    assert report["data"]["output_documents"] == first["figures"]["output_documents"]
    second = data_flow(config=cfg)
    assert second["skipped"] and second["key"] == first["key"]
    forced = data_flow(config=cfg, force=True)
    assert not forced["skipped"]
