"""The data stage flow: Common Crawl WARC (or the embedded sample) → deduplicated en + zh JSONL."""

from __future__ import annotations

from typing import Any

from prefect import flow

from crawl2score.config import Config, apply_overrides
from crawl2score.flows._stage import run_stage
from crawl2score.tasks.data import data_inputs_task, data_task


@flow(name="data")
def data_flow(config: Config, force: bool = False, overrides: list[str] | None = None) -> dict[str, Any]:
    """Resolve inputs, then run the datatrove pipeline unless WORKDIR/data holds output for the same key.

    The input key is a fingerprint of the inputs (local files by size and mtime, remote ones by URL), so
    editing an input file reruns the stage; with decontamination on, the benchmark files' hashes too.
    """
    config = apply_overrides(config, overrides)  # `--set`-style keys over the deployed config
    from crawl2score.data.inputs import input_fingerprint

    inputs = data_inputs_task(config.data, config.workdir)
    input_keys = [input_fingerprint(config.data, inputs)]
    if config.data.decontaminate:
        # The benchmark files decide what is dropped: editing them must rerun the stage.
        from crawl2score.benchmarks import benchmark_path
        from crawl2score.workdir import file_hash

        input_keys += [file_hash(benchmark_path(name)) for name in config.data.decontaminate_benchmarks]

    def body(key: str) -> dict[str, Any]:
        return data_task(config.data, config.workdir, inputs, key)

    return run_stage("data", config, input_keys, body, force=force)


if __name__ == "__main__":
    data_flow(Config())
