"""Remote inputs over a loopback HTTP server that fails on purpose: transient errors (503 on the first
requests of each file) are retried and the run reads everything; a 404 fails at once, in one line."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawl2score.config.data import DataConfig
from crawl2score.data.inputs import InputError, resolve_inputs

CRAWL_ID = "CC-MAIN-2099-02"
WARC = "CC-MAIN-2024-22-whirlwind.warc.gz"


class FlakyServer:
    """Serves `root`; the first `fail_first` requests for each path get HTTP 503."""

    def __init__(self, root: Path, fail_first: int) -> None:
        self.fail_first = fail_first
        self.requests: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - stdlib signature
                pass

            def _flaky(self) -> bool:
                path = self.path.split("?")[0]
                outer.requests[path] += 1
                if outer.requests[path] <= outer.fail_first:
                    outer.failed[path] += 1
                    self.send_error(503, "try again")
                    return True
                return False

            def do_GET(self):  # noqa: N802 - stdlib name
                if not self._flaky():
                    super().do_GET()

            def do_HEAD(self):  # noqa: N802 - stdlib name
                if not self._flaky():
                    super().do_HEAD()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def crawl_root(tmp_path, shared_dir) -> Path:
    root = tmp_path / "cc"
    rel = f"crawl-data/{CRAWL_ID}/segments/0/warc/{WARC}"
    (root / rel).parent.mkdir(parents=True)
    shutil.copy(shared_dir / "data" / "commoncrawl" / WARC, root / rel)
    (root / "crawl-data" / CRAWL_ID / "warc.paths.gz").write_bytes(gzip.compress(rel.encode() + b"\n"))
    return root


@pytest.fixture
def flaky(crawl_root) -> Iterator[FlakyServer]:
    server = FlakyServer(crawl_root, fail_first=2)
    yield server
    server.close()


def _cfg(**kw) -> DataConfig:
    return DataConfig.model_validate({"executor": {"tasks": 1, "workers": 1}, **kw})


def test_transient_errors_are_retried_and_the_run_completes(flaky, crawl_root, tmp_path):
    from crawl2score.data.pipeline import run_data_stage

    cfg = _cfg(input=[CRAWL_ID], cc_base_url=flaky.url)
    paths = resolve_inputs(cfg)
    assert paths == [f"{flaky.url}/crawl-data/{CRAWL_ID}/segments/0/warc/{WARC}"]
    assert flaky.failed[f"/crawl-data/{CRAWL_ID}/warc.paths.gz"] == 2
    figures = run_data_stage(cfg, tmp_path / "w")
    assert flaky.failed[f"/crawl-data/{CRAWL_ID}/segments/0/warc/{WARC}"] == 2  # the WARC's open, retried
    # Everything read: the same pages and documents as from the file itself.
    local = run_data_stage(_cfg(input=[str(next(crawl_root.rglob(WARC)))]), tmp_path / "l")
    assert figures["pages_read"] == local["pages_read"] > 0
    assert figures["output_documents"] == local["output_documents"] and figures["corrupt_files"] == 0


def test_permanent_404_fails_at_once_in_one_line(flaky, capsys, tmp_path):
    flaky.fail_first = 0
    with pytest.raises(InputError, match="unknown Common Crawl id CC-MAIN-1999-01") as info:
        resolve_inputs(_cfg(input=["CC-MAIN-1999-01"], cc_base_url=flaky.url))
    assert "\n" not in str(info.value)
    # One attempt, not retried: fsspec asks with HEAD, then GET, before it gives up on a path.
    assert flaky.requests["/crawl-data/CC-MAIN-1999-01/warc.paths.gz"] <= 2
    from crawl2score.cli import main

    missing = f"{flaky.url}/nothing/here.warc.gz"
    assert main(["data", "--workdir", str(tmp_path / "w"), "--input", missing]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "input not found" in err
    assert flaky.requests["/nothing/here.warc.gz"] <= 2


def test_a_server_that_never_recovers_fails_in_one_line(crawl_root):
    server = FlakyServer(crawl_root, fail_first=100)
    try:
        with pytest.raises(InputError, match="HTTP 503, 5 attempts") as info:
            resolve_inputs(_cfg(input=[CRAWL_ID], cc_base_url=server.url))
        assert "\n" not in str(info.value)
        # 1 + 4 attempts, each a HEAD and a GET from fsspec
        assert server.requests[f"/crawl-data/{CRAWL_ID}/warc.paths.gz"] == 10
    finally:
        server.close()
