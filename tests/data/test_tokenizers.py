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
