"""Configuration of the tokenizer stage (byte-level BPE) and of tokenization into shards.

Defaults follow DeepSeek LLM / V2: a byte-level BPE of 102,400 entries, special tokens included. Every key
takes part in the stage key, so changing any of them retrains (or re-tokenizes) on the next run.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TokenizerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # numba (our merge loop, tokenizer/merge_loop.py) learns rustbpe's tokens, the same tokenizer.json; the
    # stage with it trains 3.1-3.4x as fast as bare HF tokenizers on 30 MB (with rustbpe 1.8x), with held-out
    # bytes/token within 1% of tokenizers' vocabulary (BENCHMARKS.md); all three write the same layout.
    trainer: Literal["numba", "rustbpe", "tokenizers"] = Field(
        "numba", description="BPE trainer: numba (rustbpe's merges, faster), rustbpe or tokenizers"
    )
    # auto: tiktoken (same ids, ~2x faster) whenever it can reproduce the tokenizer, else tokenizers.
    encoder: Literal["auto", "tiktoken", "tokenizers"] = Field(
        "auto", description="shard encoder: auto (tiktoken where it gives the HF ids), tiktoken, tokenizers"
    )
    vocab_size: int = Field(102_400, ge=512, description="entries including special tokens (DeepSeek LLM/V2)")
    # A corpus too small to learn vocab_size - specials entries is filled with extra reserved tokens so the
    # id space (and the model's embedding) keeps its configured size; this turns that shortfall into an error.
    require_exact_vocab: bool = False
    # Slots after bos/eos/pad kept for later use (chat and fill-in-the-middle markers), as DeepSeek does.
    reserved_special_tokens: int = Field(29, ge=0, le=4096, description="<｜reserved▁N｜> slots after bos/eos/pad")
    input: str | None = Field(None, description="dir or glob of JSONL/Parquet/text; default WORKDIR/data/output")
    byte_budget: int | None = Field(None, ge=1, description="stop reading the corpus after this many bytes")
    # Per-language multiplier on how often a document is used for *training the tokenizer*: 0.5 keeps half
    # the documents, 2.0 uses each twice. Languages not listed use the "*" entry, else 1.0.
    language_weights: dict[str, float] = Field(default_factory=lambda: {"en": 1.0, "zh": 1.0})
    # tokenizers trainer only: numba and rustbpe merge while any pair occurs, which differs only on corpora
    # too small to fill the vocabulary (there the last merges are seen once or twice).
    min_frequency: int = Field(2, ge=1, description="tokenizers trainer: least count of a merged pair")
    # None: HF default (no limit). A cap keeps runs like "=====" out of the vocabulary (tokenizers trainer).
    max_token_length: int | None = Field(None, ge=2, description="tokenizers trainer only")
    heldout_fraction: float = Field(0.02, ge=0.0, lt=0.5)
    heldout_bytes: int = Field(2_000_000, ge=0, description="held-out text kept per language for the report")
    baseline: bool = Field(True, description="also train a plain ByteLevel BPE of equal size for the report")
    seed: int = Field(0, description="hash seed of the held-out split and of language sampling")
    shard_tokens: int = Field(50_000_000, ge=1024, description="target tokens per shard")
    batch_docs: int = Field(512, ge=1, description="documents per encode batch (encoded in parallel)")
    workers: int = Field(
        2, ge=1, description="counting processes (numba), threads (rustbpe, tokenizers) and encoding threads"
    )

    @model_validator(mode="after")
    def _trainer_options(self) -> TokenizerConfig:
        if self.max_token_length is not None and self.trainer != "tokenizers":
            raise ValueError(
                "tokenizer.max_token_length needs tokenizer.trainer: tokenizers (numba and rustbpe have no cap)"
            )
        # against the default, not "was it set": a config is dumped and validated again on its way to a worker
        if self.min_frequency != type(self).model_fields["min_frequency"].default and self.trainer != "tokenizers":
            raise ValueError(
                "tokenizer.min_frequency needs tokenizer.trainer: tokenizers (numba and rustbpe merge while any "
                "pair occurs)"
            )
        least = 3 + self.reserved_special_tokens + 256
        if self.vocab_size < least:
            raise ValueError(
                f"tokenizer.vocab_size {self.vocab_size} leaves no room: it counts 3 + "
                f"{self.reserved_special_tokens} special tokens and the 256 bytes, so at least {least}"
            )
        return self
