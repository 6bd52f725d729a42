"""Fixtures of the data-stage tests: small sample corpora and a loopback Common Crawl-like server."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawl2score.config.data import DataConfig

CRAWL_ID = "CC-MAIN-2099-01"


def small_config(**overrides) -> DataConfig:
    """workers=1: datatrove runs tasks in-process, which pytest and Prefect's harness need."""
    base = {"executor": {"tasks": 1, "workers": 1}, "sample_pages": 150}
    base.update(overrides)
    return DataConfig.model_validate(base)


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory) -> Path:
    from crawl2score.data.sample import write_sample

    out = tmp_path_factory.mktemp("sample150")
    write_sample(out, pages=150, seed=3)
    return out


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass


@pytest.fixture(scope="session")
def cc_server(tmp_path_factory, shared_dir: Path) -> Iterator[str]:
    """http://127.0.0.1:PORT serving crawl-data/<CRAWL_ID>/warc.paths.gz and the WARCs it lists."""
    root = tmp_path_factory.mktemp("cc")
    rel = []
    for name in ("CC-MAIN-2020-34-sample16.warc.gz", "CC-MAIN-2024-22-whirlwind.warc.gz"):
        path = root / "crawl-data" / CRAWL_ID / "segments" / "0" / "warc" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_dir / "data" / "commoncrawl" / name, path)
        rel.append(str(path.relative_to(root)))
    (root / "crawl-data" / CRAWL_ID / "warc.paths.gz").write_bytes(gzip.compress("\n".join(rel).encode() + b"\n"))
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
