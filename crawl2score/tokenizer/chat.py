"""The chat template our tokenizer ships: DeepSeek-V3's conversation format with our BOS and EOS.

DeepSeek-V3 (tokenizer_config.json of deepseek-ai/DeepSeek-V3) writes a conversation as
``<BOS>{system}<｜User｜>{user}<｜Assistant｜>{assistant}<EOS><｜User｜>...``: the assistant turn ends
with EOS and the next turn opens with ``<｜User｜>``, which is where chat-protocol generation stops. The
tool-call branches of their template are left out (no tools here). Our vocabulary has no ids for the
role markers, so they encode as plain text; BOS and EOS are the tokenizer's own special tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] }}{% endif %}{% endfor %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '" + USER + "' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '" + ASSISTANT + "' + message['content'] + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '" + ASSISTANT + "' }}{% endif %}"
)


def write_chat_template(tokenizer_dir: str | Path) -> None:
    """Put CHAT_TEMPLATE into tokenizer_config.json, where AutoTokenizer reads `chat_template` from."""
    path = Path(tokenizer_dir) / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["chat_template"] = CHAT_TEMPLATE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_heldout(tokenizer_dir: str | Path, heldout: dict[str, list[str]]) -> None:
    """The held-out documents per language as `heldout/<lang>.jsonl` ({"text": ...} per line), so the eval
    stage measures bits per byte on text the tokenizer never saw."""
    out = Path(tokenizer_dir) / "heldout"
    out.mkdir(parents=True, exist_ok=True)
    for lang, texts in sorted(heldout.items()):
        with open(out / f"{lang}.jsonl", "w", encoding="utf-8") as f:
            for text in texts:
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
