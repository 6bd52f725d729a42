"""The embedded default corpus: a deterministic `.warc.gz` of English and Chinese pages with planted
duplicates, other languages and junk, plus a JSON manifest of the ground truth.

Text sources ship with Python or an installed package, so no download is needed and nothing third-party
is copied into this repository:

* English: sentences from Python's own documentation prose (`pydoc_data.topics`).
* Chinese: words drawn by frequency from jieba's bundled `dict.txt`, strung into sentences.
* German/French/Spanish: sentences built from small word lists written here (they only need to be
  recognisable to language ID so the language filter has something to drop).

Each unique page draws its sentences independently at random, so two unique pages share almost no
5-gram shingles; near duplicates are copies with a fixed rate of word edits (substitution, deletion,
insertion) and their true 5-gram Jaccard similarity is recorded, computed with the same normalisation
and tokenisation the MinHash step uses.
"""

from __future__ import annotations

import html
import io
import itertools
import json
import random
import re
import zlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

from crawl2score.workdir import atomic_write_bytes, atomic_write_json

# Word (en) or character (zh) edit rates of the near copies: 5-gram Jaccard ~0.95, 0.91, 0.87, 0.76, 0.65,
# 0.45, 0.25 on ~400-word pages, so pairs sit on both sides of the 0.8 the dedup goal is stated at.
NEAR_EDIT_RATES = (0.005, 0.01, 0.015, 0.03, 0.05, 0.1, 0.2)
SAMPLE_NAME = "sample.warc.gz"
MANIFEST_NAME = "manifest.json"

# Short word lists for the "other language" pages (our own, enough for lid.176 to be certain).
_OTHER = {
    "de": (
        "der die das und ist nicht mit auf für eine einen dem den sich auch wird werden wurde haben hatte "
        "Stadt Haus Zeit Jahr Menschen Arbeit Schule Kinder Wasser Geschichte Regierung heute immer wieder "
        "schon noch sehr gut groß klein neue alten zwischen während nach über unter durch gegen ohne"
    ).split(),
    "fr": (
        "le la les et est pas avec sur pour une un des du dans qui que nous vous ils elles sont était avoir "
        "ville maison temps année gens travail école enfants eau histoire gouvernement aujourd'hui toujours "
        "encore très bien grand petit nouvelle ancienne entre pendant après sous contre sans aussi"
    ).split(),
    "es": (
        "el la los las y es no con por para una un del en que nosotros ellos son era tener ciudad casa "
        "tiempo año gente trabajo escuela niños agua historia gobierno hoy siempre todavía muy bien grande "
        "pequeño nueva antigua entre durante después sobre contra sin también pero cuando donde"
    ).split(),
}
_POLICY = ("terms of use", "privacy policy", "cookie", "javascript", "lorem ipsum")


@dataclass
class Page:
    url: str
    language: str
    kind: str  # unique | exact_original | exact_copy | near_original | near_copy | other_language | junk | non_html | huge
    text: str = ""
    group: str | None = None
    of: str | None = None  # the original's URL, for copies
    edit_rate: float | None = None
    jaccard: float | None = None
    mime: str = "text/html"
    payload: bytes = field(default=b"", repr=False)


@lru_cache(1)
def english_sentences() -> tuple[str, ...]:
    """Prose sentences from Python's bundled documentation, minus anything a web filter rightly drops."""
    from pydoc_data.topics import topics

    out = []
    for para in re.split(r"\n\s*\n", "\n".join(topics.values())):
        if para.startswith((" ", "\t")):  # code and indented examples
            continue
        flat = " ".join(para.split())
        for sent in re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat):
            words = sent.split()
            if not 8 <= len(words) <= 60 or not sent.endswith("."):
                continue
            low = sent.lower()
            if any(c in sent for c in "{}[]|<>\\") or any(p in low for p in _POLICY):
                continue
            # Gopher keeps a page when >= 80% of its words contain a letter; stay well clear of it.
            if _alpha_ratio(sent) < 0.86:
                continue
            out.append(sent)
    return tuple(dict.fromkeys(out))


@lru_cache(1)
def chinese_words() -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Common Chinese words from jieba's dictionary and their cumulative (damped) frequency weights."""
    import jieba

    path = Path(jieba.__file__).parent / "dict.txt"
    words, weights = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3 or not _gb2312(parts[0]):
                continue
            freq = int(parts[1])
            # Below ~2,000 the dictionary holds rare and mis-encoded characters (e.g. GBK mojibake).
            if freq < 2000 or parts[2] in ("nr", "nrt", "ns", "nz", "x", "eng"):
                continue
            words.append(parts[0])
            weights.append(freq**0.5)
    return tuple(words), tuple(itertools.accumulate(weights))


def _gb2312(word: str) -> bool:
    """Han characters of GB2312, the common simplified set: drops the dictionary's mis-encoded entries."""
    try:
        word.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return all("\u4e00" <= ch <= "\u9fff" for ch in word)


def _alpha_ratio(sentence: str) -> float:
    tokens = re.findall(r"\w+|[^\w\s]", sentence)
    return sum(any(c.isalpha() for c in t) for t in tokens) / max(len(tokens), 1)


def english_doc(rng: random.Random) -> str:
    pool = english_sentences()
    paras = [" ".join(rng.choice(pool) for _ in range(rng.randint(3, 5))) for _ in range(rng.randint(4, 6))]
    return "\n\n".join(paras)


def chinese_doc(rng: random.Random) -> str:
    words, cum_weights = chinese_words()
    paras = []
    for _ in range(rng.randint(4, 6)):
        sents = []
        for _ in range(rng.randint(3, 5)):
            clauses = [
                "".join(rng.choices(words, cum_weights=cum_weights, k=rng.randint(5, 9)))
                for _ in range(rng.randint(2, 3))
            ]
            sents.append("，".join(clauses) + rng.choice("。。。！？"))
        paras.append("".join(sents))
    return "\n\n".join(paras)


def other_doc(rng: random.Random, lang: str) -> str:
    vocab = _OTHER[lang]
    paras = []
    for _ in range(rng.randint(3, 5)):
        sents = []
        for _ in range(rng.randint(3, 5)):
            ws = rng.choices(vocab, k=rng.randint(8, 16))
            sents.append(" ".join(ws).capitalize() + ".")
        paras.append(" ".join(sents))
    return "\n\n".join(paras)


def edit_text(text: str, lang: str, rate: float, rng: random.Random) -> str:
    """Apply round(rate * tokens) random substitutions, deletions or insertions (at least one).

    Tokens are words for English and characters for Chinese: what a copy-editor (or a spinner) changes.
    """
    paras = [p.split(" ") if lang == "en" else list(p) for p in text.split("\n\n")]
    vocab = _edit_vocab(lang)
    total = sum(len(p) for p in paras)
    for _ in range(max(1, round(rate * total))):
        p = rng.choice([p for p in paras if len(p) > 1])
        i = rng.randrange(len(p))
        op = rng.random()
        if op < 0.5:
            p[i] = rng.choice(vocab)
        elif op < 0.75:
            del p[i]
        else:
            p.insert(i, rng.choice(vocab))
    join = " " if lang == "en" else ""
    return "\n\n".join(join.join(p) for p in paras)


@lru_cache(2)
def _edit_vocab(lang: str) -> tuple[str, ...]:
    if lang == "en":
        return tuple(w for s in english_sentences()[:400] for w in s.split())
    return tuple(ch for w in chinese_words()[0][:3000] for ch in w)


def shingle_jaccard(a: str, b: str, n: int = 5) -> float:
    """5-gram Jaccard as the MinHash step sees it (datatrove's simplify_text + our script-aware tokens)."""
    from datatrove.utils.text import simplify_text

    from crawl2score.data.tokenizers import ScriptAwareTokenizer

    tok = ScriptAwareTokenizer()

    def shingles(t: str) -> set[tuple[str, ...]]:
        ws = tok.word_tokenize(simplify_text(t))
        return {tuple(ws[i : i + n]) for i in range(max(len(ws) - n + 1, 1))}

    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / max(len(sa | sb), 1)


def _junk_pages(rng: random.Random, count: int, url) -> list[Page]:
    kinds = ["nav_only", "spam_en", "spam_zh", "lorem", "short_en", "code_en"]
    pages = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        if kind == "nav_only":
            text = "\n".join(
                rng.choice(["Home", "About", "Contact", "Login", "Shop", "Blog", "Help"]) for _ in range(12)
            )
            lang = "en"
        elif kind == "spam_en":
            line = "Buy cheap watches online best price free shipping today only"
            text = "\n".join([line] * rng.randint(30, 60))
            lang = "en"
        elif kind == "spam_zh":
            line = "免费下载最新电影在线观看高清无广告"
            text = "\n".join([line] * rng.randint(30, 60))
            lang = "zh"
        elif kind == "lorem":
            text = english_doc(rng) + "\n\nLorem ipsum dolor sit amet, consectetur adipiscing elit."
            lang = "en"
        elif kind == "short_en":
            text = " ".join(rng.choice(english_sentences()).split()[:12])
            lang = "en"
        else:
            text = english_doc(rng) + "\n\nfunction init() { return window.config = { debug: true }; }"
            lang = "en"
        pages.append(Page(url=url(f"junk-{kind}"), language=lang, kind="junk", text=text, group=kind))
    return pages


def build_pages(pages: int = 2400, seed: int = 0) -> list[Page]:
    """The sample's pages in file order; deterministic for (pages, seed)."""
    rng = random.Random(seed)
    counter = iter(range(10**9))

    def url(tag: str) -> str:
        return f"https://sample.crawl2score.test/{tag}/{next(counter):06d}.html"

    n_other = max(3, round(0.04 * pages))
    n_junk = max(6, round(0.05 * pages))
    n_non_html = max(2, round(0.01 * pages))
    out: list[Page] = []
    for i in range(n_other):
        lang = ("de", "fr", "es")[i % 3]
        out.append(Page(url=url(f"other-{lang}"), language=lang, kind="other_language", text=other_doc(rng, lang)))
    out += _junk_pages(rng, n_junk, url)
    for i in range(n_non_html):
        mime = ("image/png", "application/pdf")[i % 2]
        payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(500, 3000)))
        out.append(Page(url=url("binary"), language="", kind="non_html", mime=mime, payload=payload))
    # One record over the default 2 MB cap (repetitive, so it costs little on disk).
    out.append(Page(url=url("huge"), language="en", kind="huge", text=("A very large page. " * 120_000)))

    per_lang = (pages - len(out)) // 2
    for lang, make in (("en", english_doc), ("zh", chinese_doc)):
        n_pages = per_lang if lang == "en" else pages - len(out)
        n_near = round(0.07 * n_pages)  # pairs: original + one copy
        n_exact = round(0.04 * n_pages)  # groups: original + 1-3 copies
        made = 0
        for g in range(n_near):
            base = make(rng)
            rate = NEAR_EDIT_RATES[g % len(NEAR_EDIT_RATES)]
            orig = Page(
                url=url(f"{lang}-near"), language=lang, kind="near_original", text=base, group=f"{lang}-near-{g}"
            )
            copy_text = edit_text(base, lang, rate, rng)
            copy = Page(
                url=url(f"{lang}-near"),
                language=lang,
                kind="near_copy",
                text=copy_text,
                group=orig.group,
                of=orig.url,
                edit_rate=rate,
                jaccard=round(shingle_jaccard(base, copy_text), 4),
            )
            out += [orig, copy]
            made += 2
        for g in range(n_exact):
            base = make(rng)
            orig = Page(
                url=url(f"{lang}-exact"), language=lang, kind="exact_original", text=base, group=f"{lang}-exact-{g}"
            )
            out.append(orig)
            made += 1
            for _ in range(1 + g % 3):
                out.append(
                    Page(
                        url=url(f"{lang}-exact"),
                        language=lang,
                        kind="exact_copy",
                        text=base,
                        group=orig.group,
                        of=orig.url,
                    )
                )
                made += 1
        for _ in range(n_pages - made):
            out.append(Page(url=url(f"{lang}-unique"), language=lang, kind="unique", text=make(rng)))
    rng.shuffle(out)
    return out


def render_html(page: Page) -> str:
    """A plausible page: header navigation, the article, a footer (trafilatura should keep only the article)."""
    lang_attr = page.language or "en"
    # The title is drawn apart from the text (a heading repeating the first line is a duplicate line) but
    # seeded by it, so exact copies stay exact.
    rng = random.Random(zlib.crc32(page.text.encode("utf-8")))
    if page.language == "zh":
        title = "".join(rng.choices(chinese_words()[0][:2000], k=4))
    else:
        title = " ".join(rng.choice(english_sentences()).split()[:5]).title()
    title = html.escape(title)
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in page.text.split("\n\n") if p.strip())
    if page.group == "nav_only" or page.group in ("spam_en", "spam_zh"):
        body = "\n".join(f"<p>{html.escape(line)}</p>" for line in page.text.split("\n"))
    return (
        f'<!DOCTYPE html>\n<html lang="{lang_attr}"><head><meta charset="utf-8"><title>{title}</title></head>\n'
        '<body><nav><ul><li><a href="/">Home</a></li><li><a href="/about">About</a></li></ul></nav>\n'
        f"<main><article><h1>{title}</h1>\n{body}\n</article></main>\n"
        "<footer><p>Sample corpus generated by crawl2score.</p></footer></body></html>\n"
    )


def write_sample(out_dir: str | Path, pages: int = 2400, seed: int = 0) -> dict:
    """Write `<out_dir>/sample.warc.gz` and `manifest.json`; returns the manifest. Same inputs, same bytes."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    out_dir = Path(out_dir)
    page_list = build_pages(pages, seed)
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    for i, page in enumerate(page_list):
        if page.kind == "non_html":
            payload, ctype = page.payload, page.mime
        else:
            payload, ctype = render_html(page).encode("utf-8"), "text/html; charset=utf-8"
        http_headers = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
        warc_headers = {
            "WARC-Record-ID": f"<urn:uuid:{_uuid(seed, i)}>",
            "WARC-Date": (start + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if i % 2 == 0:  # half the records carry Common Crawl's identified payload type, half only HTTP's
            warc_headers["WARC-Identified-Payload-Type"] = ctype.split(";")[0]
        record = writer.create_warc_record(
            page.url, "response", payload=io.BytesIO(payload), http_headers=http_headers, warc_headers_dict=warc_headers
        )
        writer.write_record(record)
    manifest = {
        "pages": len(page_list),
        "html_pages": sum(p.kind != "non_html" for p in page_list),
        "seed": seed,
        "near_edit_rates": list(NEAR_EDIT_RATES),
        "counts": _counts(page_list),
        "documents": [{k: v for k, v in asdict(p).items() if k not in ("text", "payload")} for p in page_list],
    }
    atomic_write_bytes(out_dir / SAMPLE_NAME, buf.getvalue())
    atomic_write_json(out_dir / MANIFEST_NAME, manifest)
    return manifest


def _uuid(seed: int, i: int) -> str:
    import uuid

    return str(uuid.UUID(int=random.Random(f"{seed}-{i}").getrandbits(128), version=4))


def _counts(pages: list[Page]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in pages:
        key = f"{p.kind}:{p.language or '-'}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def load_manifest(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
