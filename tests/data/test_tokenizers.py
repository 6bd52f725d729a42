"""crawl2score.data.tokenizers: same tokens as datatrove where it matters, CJK per character for MinHash."""

from __future__ import annotations

from datatrove.utils.word_tokenizers import load_word_tokenizer

from crawl2score.data.tokenizers import JiebaWordTokenizer, ScriptAwareTokenizer, SpacyWordTokenizer

TEXT = "The quick brown fox (really) jumps over 3 lazy dogs. Isn't it?\nA second line, with commas."


def test_spacy_tokens_match_datatrove():
    assert SpacyWordTokenizer("en").word_tokenize(TEXT) == load_word_tokenizer("en").word_tokenize(TEXT)


def test_cache_returns_copies():
    tok = SpacyWordTokenizer("en")
    first = tok.word_tokenize(TEXT)
    first.append("x")
    assert tok.word_tokenize(TEXT) == first[:-1]


def test_script_aware():
    assert ScriptAwareTokenizer().word_tokenize("hello world 我们今天 ok") == [
        "hello",
        "world",
        "我",
        "们",
        "今",
        "天",
        "ok",
    ]


def test_jieba_words_and_sentences():
    tok = JiebaWordTokenizer()
    assert "北京大学" in tok.word_tokenize("我们今天去北京大学学习中文。")
    assert tok.sent_tokenize("第一句。第二句！第三句？") == ["第一句。", "第二句！", "第三句？"]


def test_regex_tokens_close_to_spacy():
    from crawl2score.data.tokenizers import RegexWordTokenizer

    regex, spacy = RegexWordTokenizer().word_tokenize(TEXT), SpacyWordTokenizer("en").word_tokenize(TEXT)
    assert regex[:4] == ["The", "quick", "brown", "fox"] and "Isn't" in regex
    assert abs(len(regex) - len(spacy)) <= 0.1 * len(spacy)


def test_regex_and_spacy_filters_keep_the_same_sample_pages():
    """The four quality filters with either English tokenizer decide alike (within 2%: 1 of 133 pages
    differs here) on the sample's English pages, and both drop the planted junk."""
    from datatrove.data import Document

    from crawl2score.config.data import DataConfig
    from crawl2score.data.recipe import quality_filters
    from crawl2score.data.sample import build_pages

    pages = [p for p in build_pages(300, seed=5) if p.language == "en" and p.kind != "huge"]
    kept = {}
    for kind in ("regex", "spacy"):
        filters = [s for s in quality_filters(DataConfig(quality_tokenizer=kind), None) if "tally" not in s.name]
        docs = [Document(text=p.text, id=p.url, metadata={"language": "en"}) for p in pages]
        kept[kind] = {d.id for d in docs if all(f.filter(d) is True for f in filters)}
    assert len(kept["spacy"]) > 50
    assert len(kept["regex"] ^ kept["spacy"]) <= 0.02 * len(kept["spacy"]), kept["regex"] ^ kept["spacy"]
    junk = {p.url for p in pages if p.kind == "junk"}
    assert junk and not junk & kept["regex"]
