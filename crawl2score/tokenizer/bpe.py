"""The byte-level BPE itself: special tokens, the DeepSeek-style pre-tokenizer, training to an exact size.

Design (DeepSeek LLM, arXiv 2401.02954 §2.1; DeepSeek-V2 keeps the same 102,400-entry tokenizer):

* **Byte level, all 256 bytes in the initial alphabet.** Any string encodes, including bytes the corpus
  never showed (control characters, rare scripts, emoji): there is no unknown token.
* **Pre-tokenizer**, specified as three splits applied in order, each keeping its matches as separate
  pieces (implemented as one equivalent regex pass, :data:`PRE_TOKENIZE_PATTERN`, which is cheaper):
  1. every digit alone (``\\p{N}``), so numbers are read digit by digit as in DeepSeek LLM;
  2. runs of CJK ideographs, kana and Hangul, so Chinese merges never cross into Latin or punctuation;
  3. a GPT-style regex for the rest: English contractions, one optional horizontal space + a run of letters
     and combining marks, one optional space + a run of punctuation/symbols, white space ending in line
     breaks, other white space (leaving the last space before a word to that word).
  No normalizer: NFC/NFKC would make ``decode(encode(x)) != x`` for text with combining marks.
* **Special tokens first** (ids 0, 1, 2 are bos, eos, pad, then reserved slots), so their ids do not move
  when the learned vocabulary changes size. The trainer's ``vocab_size`` counts them, so BPE learns
  exactly ``vocab_size - specials`` entries (256 bytes + merges) whenever the corpus has enough pairs.
* **Exact size.** HF's BPE trainer stops at ``vocab_size`` or earlier when no pair reaches
  ``min_frequency``. It never overshoots, so the only gap to close is a shortfall: we then append extra
  reserved tokens (``<｜reserved▁K｜>``) so the id space still has ``vocab_size`` entries (the model's
  embedding size is fixed by config), log a loud warning naming the size BPE reached, and with
  ``require_exact_vocab`` raise :class:`VocabShortfallError` instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from crawl2score.errors import BadInput

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"

DIGIT_PATTERN = r"\p{N}"
CJK_PATTERN = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]+"
LATIN_PATTERN = (
    r"'(?i:[sdmt]|ll|ve|re)"  # English contractions stay one piece
    r"|[^\S\r\n]?[\p{L}\p{M}]+"  # a word with its leading space (marks keep accented/Indic words whole)
    r"|[^\S\r\n]?[\p{P}\p{S}]+"  # a punctuation/symbol run with its leading space (emoji are \p{So})
    r"|\s*[\r\n]+"  # white space ending in line breaks: indentation + newline as one piece
    r"|[^\S\r\n]+(?!\S)"  # spaces before a word, minus the one the word takes
    r"|\s+"
)

# The three splits above in one regex pass (what the tokenizer uses; `reference_pre_tokenizer` keeps the three
# passes as the specification and tests/tokenizer pins their equality). Pieces of the three-pass version never
# cross a digit or a CJK-script character, so here each class excludes them, and the look-ahead of "spaces
# before a word" also ends at a digit or a CJK character (there, the end of a piece). Within a CJK run, the
# Latin pass of the three-pass version splits letters from symbols (e.g. circled katakana), hence two CJK
# alternatives. One pass instead of three is ~25% less CPU in pre-tokenization (BENCHMARKS.md).
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}"
PRE_TOKENIZE_PATTERN = (
    r"\p{N}"  # every digit alone
    rf"|[[{_CJK}]&&[\p{{L}}\p{{M}}]]+"  # a run of CJK ideographs, kana, Hangul
    rf"|[[{_CJK}]&&[\p{{P}}\p{{S}}]]+"  # a run of CJK-script symbols (㋐, ⼀)
    r"|'(?i:[sdmt]|ll|ve|re)"
    rf"|[^\S\r\n]?[[\p{{L}}\p{{M}}]&&[^{_CJK}]]+"
    rf"|[^\S\r\n]?[[\p{{P}}\p{{S}}]&&[^{_CJK}]]+"
    r"|\s*[\r\n]+"
    rf"|[^\S\r\n]+(?![^\s\p{{N}}{_CJK}])"
    r"|\s+"
)


# The same splits for rustbpe and tiktoken, whose regex engine is Rust's fancy-regex, not Oniguruma. HF's
# Split keeps the text between two matches as a piece of its own; fancy-regex's find_iter drops it. The only
# characters no alternative above can start are those outside L, M, N, P, S and white space (controls,
# format characters such as U+200B, private use, unassigned), so one last alternative takes runs of them.
# Both engines agree on every class used here for every code point, and split every string up to length 4
# over one character of each class alike (tests/tokenizer/test_encode.py).
TIKTOKEN_PATTERN = PRE_TOKENIZE_PATTERN + r"|[^\p{L}\p{M}\p{N}\p{P}\p{S}\s]+"
# GPT-2's regex, the one HF's ByteLevel(use_regex=True) applies: the baseline's pre-tokenizer for rustbpe.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


class VocabShortfallError(BadInput):
    """The corpus has too few distinct pairs to learn the configured vocabulary (require_exact_vocab)."""


def reserved_token(i: int) -> str:
    return f"<｜reserved▁{i}｜>"


def special_tokens(reserved: int) -> list[str]:
    """bos, eos, pad, then `reserved` slots: ids 0..2+reserved, stable across corpora."""
    return [BOS, EOS, PAD] + [reserved_token(i) for i in range(reserved)]


def _byte_level() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=False)


def deepseek_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Digits alone | CJK runs | GPT-style Latin, as one regex pass, then bytes to BPE's alphabet."""
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(PRE_TOKENIZE_PATTERN), behavior="isolated"), _byte_level()]
    )


def reference_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """The specification: the three splits one after the other (the stage's pre-tokenizer until 2026-11-28).

    Splits exactly as :func:`deepseek_pre_tokenizer`; kept for the equivalence tests and the benchmark.
    """
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(DIGIT_PATTERN), behavior="isolated"),
            pre_tokenizers.Split(Regex(CJK_PATTERN), behavior="isolated"),
            pre_tokenizers.Split(Regex(LATIN_PATTERN), behavior="isolated"),
            _byte_level(),
        ]
    )


def new_tokenizer(kind: str = "deepseek", model: models.BPE | None = None) -> Tokenizer:
    """A byte-level BPE, untrained unless `model` is given: `deepseek` (ours) or `bytelevel` (GPT-2 regex
    only: the baseline)."""
    tok = Tokenizer(model if model is not None else models.BPE())
    if kind == "deepseek":
        tok.pre_tokenizer = deepseek_pre_tokenizer()
    elif kind == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True, trim_offsets=False)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    tok.decoder = decoders.ByteLevel()
    return tok


@dataclass
class TrainedBPE:
    tokenizer: Tokenizer
    vocab_size: int  # entries in the final id space (== requested unless the requested was impossible)
    learned_size: int  # what BPE reached, specials included: vocab_size - filler
    filler_tokens: int  # extra reserved tokens appended to close a shortfall
    num_merges: int


def set_threads(workers: int) -> None:
    """HF tokenizers parallelises with rayon; its pool is sized once per process, at first use."""
    os.environ.setdefault("RAYON_NUM_THREADS", str(workers))
    os.environ["TOKENIZERS_PARALLELISM"] = "true"


def train_bpe(
    batches: Iterable[list[str]],
    vocab_size: int,
    *,
    reserved: int,
    min_frequency: int = 2,
    max_token_length: int | None = None,
    kind: str = "deepseek",
    require_exact: bool = False,
    length: int | None = None,
) -> TrainedBPE:
    """Train on batches of texts (streamed: tokenizers counts words batch by batch, in parallel)."""
    specials = special_tokens(reserved)
    if vocab_size < len(specials) + 256:
        raise ValueError(f"vocab_size {vocab_size} < {len(specials)} specials + 256 bytes")
    tok = new_tokenizer(kind)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=False,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=max_token_length,
    )
    tok.train_from_iterator(batches, trainer=trainer, length=length)
    why = f"pairs seen >= {min_frequency} times"
    return fill_to_size(tok, vocab_size, reserved=reserved, kind=kind, require_exact=require_exact, why=why)


def fill_to_size(
    tok: Tokenizer, vocab_size: int, *, reserved: int, kind: str, require_exact: bool, why: str
) -> TrainedBPE:
    """Close a shortfall of learned entries with filler reserved tokens, or raise with `require_exact`."""
    learned = tok.get_vocab_size()
    filler = vocab_size - learned
    if filler > 0:
        message = (
            f"BPE ({kind}) reached only {learned:,} of {vocab_size:,} vocabulary entries: the corpus has too few {why}"
        )
        if require_exact:
            raise VocabShortfallError(message + " (tokenizer.require_exact_vocab is set)")
        # Ids stay dense: the filler continues the reserved numbering after the configured slots.
        tok.add_special_tokens([reserved_token(reserved + i) for i in range(filler)])
    assert tok.get_vocab_size() == vocab_size, (tok.get_vocab_size(), vocab_size)
    num_merges = learned - len(special_tokens(reserved)) - 256
    return TrainedBPE(tok, vocab_size, learned, max(filler, 0), num_merges)


def special_ids(tok: Tokenizer) -> dict[str, int]:
    ids = {"bos_id": tok.token_to_id(BOS), "eos_id": tok.token_to_id(EOS), "pad_id": tok.token_to_id(PAD)}
    missing = [k for k, v in ids.items() if v is None]
    if missing:
        raise ValueError(f"tokenizer lacks special tokens: {', '.join(missing)}")
    return ids  # type: ignore[return-value]


def save_hf(tok: Tokenizer, out_dir: str | os.PathLike[str], model_max_length: int | None = None) -> None:
    """tokenizer.json plus the files PreTrainedTokenizerFast / AutoTokenizer read offline.

    No BOS is added by the HF tokenizer: training shards hold documents separated by EOS only. Special-token
    text gets HF's default, as in DeepSeek-V3's tokenizer: `tokenizer(text)` and `apply_chat_template`
    map "<｜begin▁of▁sentence｜>" to its id, which the chat template needs (it writes BOS and EOS as text).
    Documents are encoded with that text as plain bytes, so that a page cannot forge a boundary: the shards'
    encoders do this, and from HF `tokenizer(text, split_special_tokens=True)` gives the same ids.
    `clean_up_tokenization_spaces` is off, or HF would rewrite " ." to "." on decode and break the round trip.
    """
    from transformers import PreTrainedTokenizerFast

    kwargs: dict[str, Any] = {}
    if model_max_length is not None:
        kwargs["model_max_length"] = model_max_length
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        clean_up_tokenization_spaces=False,
        **kwargs,
    )
    hf.save_pretrained(str(out_dir))


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Our tokenizer from a directory or tokenizer.json, set to encode *documents*.

    `encode_special_tokens = True` makes the literal text "<｜end▁of▁sentence｜>" inside a web page encode as
    ordinary bytes, never as the special id: a document cannot forge a boundary or a control token.
    """
    path = Path(path)
    tok = Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path))
    tok.encode_special_tokens = True
    return tok


def encode_texts(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Ids of each text, no specials added (encode_batch_fast skips offsets; parallel across texts)."""
    return [e.ids for e in tok.encode_batch_fast(texts, add_special_tokens=False)]
