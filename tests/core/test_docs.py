"""The configuration reference in docs/ lists every key the code accepts (regenerate it with
`crawl2score config --keys`)."""

from __future__ import annotations

import re
from pathlib import Path

from crawl2score.config import config_keys_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_doc_lists_every_key() -> None:
    keys = set(re.findall(r"^\| `([^`]+)` \|", config_keys_markdown(), flags=re.M))
    documented = set(re.findall(r"^\| `([^`]+)` \|", DOC.read_text(encoding="utf-8"), flags=re.M))
    assert keys, "no keys found"
    assert sorted(keys - documented) == [], "docs/configuration.md is stale: run `crawl2score config --keys`"
    assert sorted(documented - keys) == [], "docs/configuration.md lists keys the code no longer has"
