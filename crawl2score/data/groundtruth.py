"""Score a data-stage run on the sample corpus against the sample's manifest (what tests and the benchmark
assert): share of planted exact and near duplicates removed, and unique pages lost to dedup.

Only pages that reached dedup count (a group whose pages a quality filter dropped says nothing about
dedup). A group is deduplicated when exactly one of its pages that reached dedup survives.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any


def read_urls(folder: str | os.PathLike[str]) -> set[str]:
    """URLs of the documents in a folder of datatrove JSONL(.gz) files."""
    urls: set[str] = set()
    for path in sorted(Path(folder).glob("*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                urls.add(json.loads(line)["metadata"]["url"])
    return urls


def score_dedup(manifest: dict[str, Any], workdir: str | os.PathLike[str], near_jaccard: float = 0.8) -> dict[str, Any]:
    data = Path(workdir) / "data"
    kept = read_urls(data / "output")
    removed_exact = read_urls(data / "removed" / "exact_dedup")
    removed_near = read_urls(data / "removed" / "minhash_dedup")
    reached = kept | removed_exact | removed_near
    groups: dict[str, list[dict]] = defaultdict(list)
    for doc in manifest["documents"]:
        if doc.get("group") and doc["kind"] in ("exact_original", "exact_copy", "near_original", "near_copy"):
            groups[doc["group"]].append(doc)

    exact_dups = exact_removed = 0
    near_pairs = near_removed = 0
    missed: list[str] = []
    for name, docs in groups.items():
        urls = [d["url"] for d in docs if d["url"] in reached]
        if len(urls) < 2:
            continue
        survivors = sum(u in kept for u in urls)
        if "-exact-" in name:
            exact_dups += len(urls) - 1
            exact_removed += len(urls) - max(survivors, 1)
            if survivors != 1:
                missed.append(name)
        else:
            copy = next(d for d in docs if d["kind"] == "near_copy")
            if copy["jaccard"] >= near_jaccard:
                near_pairs += 1
                near_removed += survivors == 1
                if survivors != 1:
                    missed.append(f"{name} (J={copy['jaccard']})")
    unique = [d["url"] for d in manifest["documents"] if d["kind"] == "unique" and d["url"] in reached]
    unique_lost = [u for u in unique if u not in kept]
    return {
        "exact_duplicates": exact_dups,
        "exact_removed_frac": exact_removed / exact_dups if exact_dups else 1.0,
        "near_pairs": near_pairs,
        "near_removed_frac": near_removed / near_pairs if near_pairs else 1.0,
        "unique_reached": len(unique),
        "unique_removed_frac": len(unique_lost) / len(unique) if unique else 0.0,
        "missed_groups": missed,
    }
