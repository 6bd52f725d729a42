"""Resiliparse against Trafilatura as the data stage's HTML extractor, on real crawl pages and the sample.

One process, one core, in one run for both extractors and both corpora:
1. extraction alone: docs per CPU second of the library call (`extract()` in this process), and of the
   datatrove step (`BaseExtractor.run`: a child process per task, each page sent over a pipe, timeout);
2. the whole stage (`run_data_stage`, one task, one worker) for each extractor with each English word
   tokenizer of the quality filters (`data.quality_tokenizer`: spacy, regex): docs per CPU second, and
   docs and bytes kept after each step; best of `--rounds` rounds, interleaved, after a warm-up of both on 100 other sample
   pages (models load once per process). The stage's fixed cost (8 datatrove stages, each setting up
   logging, stats and a sandbox child) is measured on a one-page WARC and also taken out, giving the
   per-page rate a large crawl would see; and the default's cost of one more page, from the real WARCs
   run once and `--copies` times in one file (everything paid once per run cancels out);
3. per page, the character-level overlap of the two texts (whitespace collapsed): the longest common
   subsequence (LCS) as a share of each text, and 2·LCS / (len a + len b); pages with > 200 characters;
4. `--md FILE`: the pages where the two differ most, side by side (for docs/data.md).

CPU seconds are user + system of this process and of its reaped children (the extractor's sandbox child
and, for the stage, nothing else: one worker runs in-process), so a shared machine's load matters little.

    .venv/bin/python benchmarks/extractors.py [--pages 800] [--rounds 2] [--out r.json] [--md pages.md]

Real pages: every WARC under `$CRAWL2SCORE_SHARED_DIR/data/commoncrawl/` (two small Common Crawl files and
one 2008 Internet Archive crawl, 157 HTML responses).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import tempfile
import time
from pathlib import Path

from crawl2score.data.extractors import EXTRACTORS

SPACES = re.compile(r"\s+")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


def cpu_seconds() -> float:
    """User + system seconds of this process and its reaped children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def read_pages(paths: list[str]):
    from crawl2score.data.steps import WarcStreamReader

    return list(WarcStreamReader(paths).run())


def extraction(name: str, docs) -> tuple[dict[str, str], dict[str, float]]:
    """Texts by document id, and docs per CPU second bare and through the datatrove step."""
    from datatrove.data import Document

    from crawl2score.data.extractors import make_extractor

    step = make_extractor(name, timeout_s=5.0)
    texts: dict[str, str] = {}
    cpu = cpu_seconds()
    for doc in docs:
        try:
            texts[doc.id] = step.extract(doc.text) or ""
        except Exception:  # counted as no text; the step would count it as clean_error
            texts[doc.id] = ""
    bare = cpu_seconds() - cpu
    copies = [Document(text=d.text, id=d.id) for d in docs]
    cpu = cpu_seconds()
    for _ in make_extractor(name, timeout_s=5.0).run(iter(copies)):
        pass
    stepped = cpu_seconds() - cpu
    return texts, {"bare": round(len(docs) / bare, 1), "step": round(len(docs) / stepped, 1)}


# Whole-stage variants: extractor, English word tokenizer of the quality filters.
VARIANTS = {
    "trafilatura+spacy": ("trafilatura", "spacy"),
    "trafilatura+regex": ("trafilatura", "regex"),
    "resiliparse+spacy": ("resiliparse", "spacy"),
    "resiliparse+regex": ("resiliparse", "regex"),
}


def stage(variant: str, inputs: list[str], workdir: Path) -> tuple[float, float, dict]:
    """(CPU s, wall s, stats.json) of one whole data stage run."""
    from crawl2score.config.data import DataConfig
    from crawl2score.data.pipeline import run_data_stage

    name, tok = VARIANTS[variant]
    cfg = DataConfig(input=inputs, extractor=name, quality_tokenizer=tok, executor={"tasks": 1, "workers": 1})
    shutil.rmtree(workdir, ignore_errors=True)
    cpu, wall = cpu_seconds(), time.perf_counter()
    run_data_stage(cfg, workdir)
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    stats = json.loads((workdir / "data" / "stats.json").read_text())
    stats["step_seconds"] = step_seconds(workdir)
    return cpu, wall, stats


def per_page_rate(real: list[str], copies: int, rounds: int, root: Path) -> dict:
    """The default's cost of one more real page: the real WARCs once and `copies` times in one file (gzip
    members concatenate), interleaved, fastest of `rounds` each; (copies - 1) x pages / the CPU difference.

    Everything a run pays once (datatrove's eight stages, the extractor child warming up, models) cancels
    out, which the one-page fixed cost above does not fully catch. Two things the copies skip are added
    back from the single run, so that each copy costs what new pages would: exact dedup drops the copies,
    so the MinHash stages' time (`dedup_tail_s`, datatrove's step seconds); and the word tokenizers' cache
    (128 texts per language) holds every distinct text of the real pages (~95 English ones), so the copies
    are never split again: the single run's CPU seconds inside the tokenizers (`tokenize_s`) per copy.
    The two minimums are taken apart, so the machine's drift shows more in the difference than in either.
    """
    from crawl2score.data.tokenizers import _LastTextCache

    many = root / "real-copies.warc.gz"
    with many.open("wb") as out:
        for _ in range(copies):
            for path in real:
                out.write(Path(path).read_bytes())
    spent = [0.0]
    patched = {cls: cls._tokenize for cls in _LastTextCache.__subclasses__()}

    def timed(real_tokenize):
        def tokenize(self, text: str) -> list[str]:
            t = time.process_time()
            try:
                return real_tokenize(self, text)
            finally:
                spent[0] += time.process_time() - t

        return tokenize

    once, once_pages, tail, tokenize_s, many_cpu = float("inf"), 0, 0.0, 0.0, float("inf")
    try:
        for cls, fn in patched.items():
            cls._tokenize = timed(fn)
        for _ in range(rounds):
            spent[0] = 0.0
            cpu, _, stats = stage("resiliparse+regex", real, root / "run")
            if cpu < once:
                once, once_pages, tokenize_s = cpu, stats["input"]["documents"], spent[0]
                tail = sum(v for k, v in stats["step_seconds"].items() if k.startswith("minhash"))
            cpu, _, stats = stage("resiliparse+regex", [str(many)], root / "run")
            assert stats["input"]["documents"] == copies * once_pages, stats["input"]["documents"]
            many_cpu = min(many_cpu, cpu)
    finally:
        for cls, fn in patched.items():
            cls._tokenize = fn
    added = (copies - 1) * (tail + tokenize_s)
    return {
        "copies": copies,
        "pages": copies * once_pages,
        "cpu_s_once": round(once, 2),
        "cpu_s_copies": round(many_cpu, 2),
        "dedup_tail_s": round(tail, 3),
        "tokenize_s": round(tokenize_s, 3),
        "docs_per_cpu_s_per_page": round((copies - 1) * once_pages / (many_cpu + added - once), 1),
    }


def step_seconds(workdir: Path) -> dict[str, float]:
    """Wall seconds datatrove timed in each step of each stage (the extractor's includes its child's work)."""
    out = {}
    for path in sorted((workdir / "data" / "logs").glob("*/stats.json")):
        for step in json.loads(path.read_text()):
            total = (step.get("time_stats") or {}).get("total", 0.0)
            if total >= 0.001:
                out[f"{path.parent.name}: {step['name'].split(': ', 1)[-1]}"] = round(total, 3)
    return out


def overlap(texts: dict[str, dict[str, str]], ids: list[str]) -> tuple[dict, list[dict]]:
    """Per-page LCS overlap of the two extractors' texts; summary and per-page rows."""
    from rapidfuzz.distance import LCSseq

    a_name, b_name = EXTRACTORS[1], EXTRACTORS[0]  # resiliparse, trafilatura
    rows = []
    for i in ids:
        a, b = (SPACES.sub(" ", texts[n][i]).strip() for n in (a_name, b_name))
        if not a and not b:
            continue
        lcs = LCSseq.similarity(a, b)
        rows.append(
            {
                "id": i,
                "chars": {a_name: len(a), b_name: len(b)},
                f"{b_name}_in_{a_name}": round(lcs / len(b), 3) if b else None,
                f"{a_name}_in_{b_name}": round(lcs / len(a), 3) if a else None,
                "similarity": round(2 * lcs / (len(a) + len(b)), 3),
            }
        )

    def quantiles(key: str) -> list[float]:
        v = sorted(r[key] for r in rows if r[key] is not None)
        return [v[int(q * (len(v) - 1))] for q in (0.1, 0.25, 0.5, 0.75, 0.9)] if v else []

    both = [r for r in rows if min(r["chars"].values()) > 0]
    total = {n: sum(r["chars"][n] for r in rows) for n in (a_name, b_name)}
    summary = {
        "pages_with_text": len(rows),
        "pages_with_text_from_both": len(both),
        "over_200_chars": {n: sum(len(texts[n][i]) > 200 for i in ids) for n in (a_name, b_name)},
        "chars": total,
        "similarity_p10_p25_p50_p75_p90": quantiles("similarity"),
        f"{b_name}_in_{a_name}_p10_p25_p50_p75_p90": quantiles(f"{b_name}_in_{a_name}"),
        f"{a_name}_in_{b_name}_p10_p25_p50_p75_p90": quantiles(f"{a_name}_in_{b_name}"),
    }
    return summary, rows


def kept_per_step(stats: dict) -> list[dict]:
    return [{"step": r["step"], "docs": r["docs_out"], "bytes": r["bytes_out"]} for r in stats["steps"]]


def side_by_side(rows: list[dict], texts: dict, urls: dict[str, str], n: int = 5, width: int = 700) -> str:
    """Markdown: the `n` pages with the lowest similarity where one text has > 200 characters."""

    def cell(t: str) -> str:
        t = EMAIL.sub("[e-mail]", t.strip())  # quoted in docs: no addresses
        t = t if len(t) <= width else t[:width] + " …"
        return t.replace("|", "\\|").replace("\n", " ⏎ ") or "*(nothing)*"

    # Latin-script pages only: the lowest-similarity Chinese pages of the 2020 sample are gambling spam
    # listings, the same pattern (one extractor keeps a listing, the other its menu) not worth quoting.
    def latin(r: dict) -> bool:
        t = texts["resiliparse"][r["id"]] + texts["trafilatura"][r["id"]]
        return sum(c.isascii() for c in t) > 0.95 * len(t)

    candidates = sorted((r for r in rows if max(r["chars"].values()) > 200 and latin(r)), key=lambda r: r["similarity"])
    picked, seen, hosts = [], set(), {}
    for r in candidates:  # each text once, two pages a host: the 2008 crawl repeats its menus and 404s
        pair = (texts["resiliparse"][r["id"]], texts["trafilatura"][r["id"]])
        host = urls[r["id"]].split("/")[2] if "://" in urls[r["id"]] else ""
        if seen & set(pair) or hosts.get(host, 0) >= 2 or len(picked) >= n:
            continue
        seen.update(pair)
        hosts[host] = hosts.get(host, 0) + 1
        picked.append(r)
    out = []
    for r in picked:
        out.append(
            f"**{urls[r['id']]}** — similarity {r['similarity']}, characters: "
            f"resiliparse {r['chars']['resiliparse']:,}, trafilatura {r['chars']['trafilatura']:,}\n\n"
            f"| resiliparse | trafilatura |\n|---|---|\n"
            f"| {cell(texts['resiliparse'][r['id']])} | {cell(texts['trafilatura'][r['id']])} |\n"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=800, help="pages of the embedded sample")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--md", default=None)
    parser.add_argument("--md-only", action="store_true", help="only extract the real pages and write --md")
    parser.add_argument(
        "--copies", type=int, default=4, help="the real WARCs repeated this many times for the per-page rate (>= 2)"
    )
    args = parser.parse_args()
    if args.copies < 2:
        parser.error(f"--copies {args.copies}: need at least 2")

    from crawl2score.data.sample import write_sample

    shared = Path(os.environ.get("CRAWL2SCORE_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
    real = sorted(str(p) for p in (shared / "data" / "commoncrawl").glob("*.warc.gz"))
    if not real:
        raise SystemExit(f"no WARC files under {shared}/data/commoncrawl (set CRAWL2SCORE_SHARED_DIR)")
    if args.md_only:
        docs = read_pages(real)
        texts = {name: extraction(name, docs)[0] for name in EXTRACTORS}
        _, rows = overlap(texts, [d.id for d in docs])
        urls = {d.id: d.metadata.get("url", d.id) for d in docs}
        Path(args.md).write_text(side_by_side(rows, texts, urls) + "\n")
        return
    root = Path(tempfile.mkdtemp(prefix="c2s-extract-"))
    result: dict = {"load_average_1m_start": round(os.getloadavg()[0], 2)}
    try:
        write_sample(root / "sample", pages=args.pages, seed=0)
        write_sample(root / "warm", pages=100, seed=1)
        corpora = {"real": real, "sample": [str(root / "sample" / "sample.warc.gz")]}
        for name in VARIANTS:  # warm-up: fastText, spaCy, jieba load once per process
            stage(name, [str(root / "warm" / "sample.warc.gz")], root / "run")
        one_page = [str(shared / "data" / "commoncrawl" / "CC-MAIN-2024-22-whirlwind.warc.gz")]
        fixed = {n: min(stage(n, one_page, root / "run")[0] for _ in range(args.rounds)) for n in VARIANTS}
        result["stage_fixed_cpu_s_one_page"] = {n: round(v, 2) for n, v in fixed.items()}
        for corpus, inputs in corpora.items():
            docs = read_pages(inputs)
            texts, speeds = {}, {}
            for name in EXTRACTORS:
                texts[name], speeds[name] = extraction(name, docs)
            best: dict[str, tuple[float, float, dict]] = {}
            for _ in range(args.rounds):
                for name in VARIANTS:
                    run = stage(name, inputs, root / "run")
                    if name not in best or run[0] < best[name][0]:
                        best[name] = run
            summary, rows = overlap(texts, [d.id for d in docs])
            pages = best["resiliparse+regex"][2]["input"]["documents"]
            result[corpus] = {
                "html_pages": len(docs),
                "extraction_docs_per_cpu_s": speeds,
                "stage": {
                    name: {
                        "pages_read": stats["input"]["documents"],
                        "cpu_s": round(cpu, 2),
                        "wall_s": round(wall, 2),
                        "docs_per_cpu_s": round(stats["input"]["documents"] / cpu, 1),
                        "docs_per_cpu_s_without_fixed": round(
                            (stats["input"]["documents"] - 1) / max(cpu - fixed[name], 1e-9), 1
                        ),
                        "kept": kept_per_step(stats),
                        "step_seconds": stats["step_seconds"],
                    }
                    for name, (cpu, wall, stats) in best.items()
                },
                "overlap": summary,
            }
            assert all(s["input"]["documents"] == pages for _, _, s in best.values())
            if corpus == "real" and args.md:
                urls = {d.id: d.metadata.get("url", d.id) for d in docs}
                Path(args.md).write_text(side_by_side(rows, texts, urls) + "\n")
        result["real_per_page"] = per_page_rate(real, args.copies, args.rounds, root)
        ex = result["real"]["extraction_docs_per_cpu_s"]
        st = {k.split("+")[0]: v for k, v in result["real"]["stage"].items() if k.endswith("+spacy")}
        result["ratios_real"] = {
            "extraction_bare_resiliparse_vs_trafilatura": round(
                ex["resiliparse"]["bare"] / ex["trafilatura"]["bare"], 2
            ),
            "extraction_step_resiliparse_vs_trafilatura": round(
                ex["resiliparse"]["step"] / ex["trafilatura"]["step"], 2
            ),
            "stage_resiliparse_vs_trafilatura": round(
                st["resiliparse"]["docs_per_cpu_s"] / st["trafilatura"]["docs_per_cpu_s"], 2
            ),
            "stage_default_now_vs_before": round(
                result["real"]["stage"]["resiliparse+regex"]["docs_per_cpu_s"]
                / result["real"]["stage"]["trafilatura+spacy"]["docs_per_cpu_s"],
                2,
            ),
            "stage_without_fixed_resiliparse_vs_trafilatura": round(
                st["resiliparse"]["docs_per_cpu_s_without_fixed"] / st["trafilatura"]["docs_per_cpu_s_without_fixed"], 2
            ),
        }
        result["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
