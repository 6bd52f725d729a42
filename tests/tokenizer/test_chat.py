"""The tokenizer stage ships DeepSeek-V3's chat template and its held-out documents."""

from __future__ import annotations

import json

from crawl2score.tokenizer.chat import ASSISTANT, USER


def test_trained_tokenizer_formats_chats_as_deepseek_v3(trained) -> None:
    from transformers import AutoTokenizer

    path, figures = trained
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]
    text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == f"{tok.bos_token}Be brief.{USER}1+1?{ASSISTANT}"
    chat.append({"role": "assistant", "content": "2"})
    text = tok.apply_chat_template(chat, tokenize=False)
    assert text.endswith(f"{ASSISTANT}2{tok.eos_token}")  # the assistant turn ends with EOS
    ids = tok.encode(text, add_special_tokens=False, split_special_tokens=False)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    # as a plain transformers user calls it: BOS and EOS are their ids, not their text in bytes
    chat_ids = tok.apply_chat_template(chat, tokenize=True)
    chat_ids = chat_ids["input_ids"] if isinstance(chat_ids, dict) or hasattr(chat_ids, "keys") else chat_ids
    assert chat_ids == ids


def test_heldout_documents_are_written_per_language(trained) -> None:
    path, figures = trained
    for lang in ("en", "zh"):
        lines = (path / "heldout" / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines()
        texts = [json.loads(line)["text"] for line in lines]
        assert len(texts) == figures["heldout"][lang]["docs"]
        assert sum(len(t.encode("utf-8")) for t in texts) == figures["heldout"][lang]["bytes"]
