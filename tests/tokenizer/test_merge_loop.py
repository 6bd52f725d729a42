"""The numba trainer: Python's regex splits as the other engines do, the merge loop learns rustbpe's tokens,
and the stage with it writes the very tokenizer.json that rustbpe gives."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import rustbpe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Regex, pre_tokenizers

from crawl2score.config.tokenizer import TokenizerConfig
from crawl2score.tokenizer.bpe import GPT2_PATTERN, PRE_TOKENIZE_PATTERN, TIKTOKEN_PATTERN
from crawl2score.tokenizer.corpus import iter_documents
from crawl2score.tokenizer.merge_loop import learn_tokens
from crawl2score.tokenizer.pretokenize import _compiled, count_batch, count_words, splitter
from crawl2score.tokenizer.ranks import merges_from_ranks, train_numba, train_rustbpe
from crawl2score.tokenizer.train import train_tokenizer
from tests.tokenizer.test_encode import ALL_CHARS, ALPHABET, CLASSES, SAMPLES

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cls", CLASSES)
def test_python_regex_agrees_with_hf_on_every_class_for_every_code_point(cls: str) -> None:
    """The third engine (the numba trainer's counting) puts the same code points in each class as
    Oniguruma, which test_encode.py pins to fancy-regex."""
    python = set(_compiled(splitter(cls).exact).findall(ALL_CHARS))
    left = pre_tokenizers.Split(Regex(cls), behavior="removed").pre_tokenize_str(ALL_CHARS)
    oniguruma = set(ALL_CHARS) - set("".join(p for p, _ in left))
    assert python == oniguruma, sorted(map(hex, map(ord, python ^ oniguruma)))[:20]
    assert python


def test_regex_knows_every_character_the_encoder_knows(caplog) -> None:
    """The correction covers a `regex` newer than the encoder; an older one would warn (it does not here)."""
    from crawl2score.tokenizer.pretokenize import _newer_characters

    with caplog.at_level(logging.WARNING, logger="crawl2score.tokenizer"):
        newer = _newer_characters.__wrapped__()
    assert "upgrade regex" not in caplog.text
    assert all(a <= b for a, b in newer)


def test_python_regex_splits_as_the_hf_pre_tokenizer() -> None:
    """All 137,560 strings of 1-4 characters of test_encode's alphabet: the same pieces."""
    split = pre_tokenizers.Split(Regex(PRE_TOKENIZE_PATTERN), behavior="isolated")
    findall = splitter(TIKTOKEN_PATTERN).split
    for n in range(1, 5):
        for chars in itertools.product(ALPHABET, repeat=n):
            text = "".join(chars)
            assert findall(text) == [p for p, _ in split.pre_tokenize_str(text)], repr(text)


def rustbpe_tokens(texts: list[str], n_merges: int, pattern: str = TIKTOKEN_PATTERN) -> list[bytes]:
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(texts), 256 + n_merges, pattern=pattern)
    return [bytes(b) for b, _ in sorted(trainer.get_mergeable_ranks(), key=lambda item: item[1])]


def test_same_tokens_as_rustbpe_on_the_corpus(small_corpus: list[Path]) -> None:
    """8,192 entries on 1.5 MB of English and Chinese: every merge equal, in order, through the CJK
    characters' bytes, the words and the ties of the last merges."""
    texts = [d.text for d in iter_documents(small_corpus)]
    ours, splits = learn_tokens(count_batch(texts, TIKTOKEN_PATTERN), 8192 - 256)
    assert ours == rustbpe_tokens(texts, 8192 - 256)
    assert len(ours) == 8192
    # the merges the loop made are those the rank bridge would recover by replaying BPE
    assert merges_from_ranks(ours, splits) == merges_from_ranks(ours)


ODD = [
    "aaaaaaa aaaa aaa aa",  # overlapping pairs: left to right within a word
    "abababab ababa bab",  # a pair and its reverse
    "0000 1111 " * 5,  # digits are single pieces: no pairs at all
    "中中中中中 国国国 中国中国",  # a CJK character's own bytes, then characters
    "👩‍💻👩‍💻 🇨🇳🇨🇳",  # emoji sequences: long runs of 4-byte characters
    "\x00\x00\x00 \x1b\x1b \u200b\u200b",  # controls and format characters
]


def test_same_tokens_as_rustbpe_on_odd_words() -> None:
    for pattern in (TIKTOKEN_PATTERN, GPT2_PATTERN):
        tokens, splits = learn_tokens(count_batch(ODD, pattern), 300)
        assert tokens == rustbpe_tokens(ODD, 300, pattern)
        assert merges_from_ranks(tokens, splits) == merges_from_ranks(tokens)


TEXTS = st.lists(
    st.one_of(
        st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
        st.sampled_from(SAMPLES + ODD),
        st.text(alphabet="ab ", max_size=200),  # few symbols: long runs, many ties and overlaps
        st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x4E10), max_size=60),
    ),
    max_size=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=TEXTS, n_merges=st.integers(1, 400))
def test_same_tokens_as_rustbpe_on_arbitrary_text(texts: list[str], n_merges: int) -> None:
    """Any text, any number of merges, including more than the text has pairs for (both stop early)."""
    tokens, splits = learn_tokens(count_batch(texts, TIKTOKEN_PATTERN), n_merges)
    assert tokens == rustbpe_tokens(texts, n_merges)
    assert merges_from_ranks(tokens, splits) == merges_from_ranks(tokens)


def test_counting_in_processes_gives_the_counts_of_one_process(small_corpus: list[Path]) -> None:
    texts = [d.text for d in iter_documents(small_corpus)]
    batches = [texts[i : i + 20] for i in range(0, len(texts), 20)]
    assert len(batches) > 4
    one = count_words(batches, TIKTOKEN_PATTERN, workers=1)
    assert count_words(iter(batches), TIKTOKEN_PATTERN, workers=2, inline_chars=0) == one
    assert one == Counter(w for t in texts for w, _ in pre_tokenizers.Split(
        Regex(PRE_TOKENIZE_PATTERN), behavior="isolated").pre_tokenize_str(t))  # fmt: skip
    odd = [["ab\ud800cd ab", "\n\x00 ï", ""]] * 3  # lone surrogates, NUL, newlines survive the pipes
    assert count_words(odd, TIKTOKEN_PATTERN, workers=2, inline_chars=0) == count_words(odd, TIKTOKEN_PATTERN)


def counting_processes(parent: int | None = None) -> list[int]:
    """Pids of the word-counting children of `parent` (this process by default), from Linux's /proc."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"crawl2score.tokenizer.pretokenize" in command:
            found.append(int(entry.name))
    return found


def test_a_small_corpus_is_counted_without_processes(small_corpus: list[Path]) -> None:
    """Below `INLINE_CHARS` (here ~1 M characters) no counting process starts: it would cost more."""
    texts = [d.text for d in iter_documents(small_corpus)]
    assert sum(map(len, texts)) < 2_000_000

    def watched():
        for batch in [texts[i : i + 20] for i in range(0, len(texts), 20)]:
            assert counting_processes() == []
            yield batch

    assert count_words(watched(), TIKTOKEN_PATTERN, workers=2) == count_batch(texts, TIKTOKEN_PATTERN)


def started_counting_processes(n: int, parent: int | None = None) -> list[int]:
    """The n counting processes, once all have started (they start in threads, so a moment after the
    first batches); waits at most a minute."""
    for _ in range(600):
        if len(pids := counting_processes(parent)) == n:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"expected {n} counting processes, found {counting_processes(parent)}")


def test_a_killed_counting_process_loses_no_batch(small_corpus: list[Path], caplog) -> None:
    """kill -9 of every counting process after the fourth batch (as the OOM killer would): the rest is
    counted in this process, with one warning per process, and the counts are those of one process."""
    texts = [d.text for d in iter_documents(small_corpus)]
    batches = [texts[i : i + 20] for i in range(0, len(texts), 20)]

    def killing():
        for i, batch in enumerate(batches):
            if i == 4:
                pids = started_counting_processes(2)
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
            yield batch

    with caplog.at_level(logging.WARNING, logger="crawl2score.tokenizer"):
        assert count_words(killing(), TIKTOKEN_PATTERN, workers=2, inline_chars=0) == count_words(
            batches, TIKTOKEN_PATTERN
        )
    # each killed process is named once: as ended, or, if the kill came before it said READY, as not started
    ended = caplog.text.count("a word-counting process ended (killed by SIGKILL (often the out-of-memory")
    assert ended + caplog.text.count("a word-counting process did not start") == 2 and ended >= 1
    assert counting_processes() == []


def test_an_executable_that_is_no_python_is_counted_here(monkeypatch, caplog) -> None:
    """A frozen or embedded app's sys.executable cannot run the counting code: it never says READY (here
    `cat`, which refuses `-c`), so each thread counts in the stage's process, with a warning."""
    monkeypatch.setattr(sys, "executable", "/bin/cat")
    batches = [["one two three"] * 5, ["three four"] * 3, ["five 中文"]] * 4
    with caplog.at_level(logging.WARNING, logger="crawl2score.tokenizer"):
        assert count_words(batches, TIKTOKEN_PATTERN, workers=2, inline_chars=0) == count_words(
            batches, TIKTOKEN_PATTERN
        )
    assert caplog.text.count("a word-counting process did not start (no answer)") == 2


SCRIPT = """
import sys, time
sys.path.insert(0, {repo!r})
print("TOP LEVEL RAN", flush=True)
from crawl2score.tokenizer.bpe import TIKTOKEN_PATTERN
from crawl2score.tokenizer.pretokenize import count_words

def batches():
    for i in range({n}):
        if i == 2:
            print("COUNTING", flush=True)
            time.sleep({pause})
        yield [["one two three"] * 5, ["three four"] * 3, ["five 中文"]][i % 3]

print("COUNTS", sorted(count_words(batches(), TIKTOKEN_PATTERN, workers=2, inline_chars=0).items()), flush=True)
"""


def test_a_script_without_a_main_guard_runs_its_top_level_once(tmp_path: Path) -> None:
    """The counting processes run this package's module, not the caller's script: a script without
    `if __name__ == "__main__":` is not run again in them (multiprocessing's spawn would)."""
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT.format(repo=str(REPO), n=12, pause=0))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    expected = count_words(
        [[["one two three"] * 5, ["three four"] * 3, ["five 中文"]][i % 3] for i in range(12)], TIKTOKEN_PATTERN
    )
    assert run.stdout.count("TOP LEVEL RAN") == 1
    assert f"COUNTS {sorted(expected.items())}" in run.stdout
    assert "Traceback" not in run.stderr and "WARNING" not in run.stderr


def test_counting_processes_end_with_their_parent(tmp_path: Path) -> None:
    """kill -9 of the stage's process (a lost worker, a cancelled run) leaves no counting process behind:
    their input closes and they end."""
    script = tmp_path / "parent.py"
    script.write_text(SCRIPT.format(repo=str(REPO), n=12, pause=600))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        while "COUNTING" not in parent.stdout.readline():
            pass
        children = started_counting_processes(2, parent.pid)
    finally:
        parent.kill()
        parent.wait()
    for pid in children:  # each ends on its own once its stdin closes; wait for that, bounded
        for _ in range(600):
            if not Path(f"/proc/{pid}").exists() or "Z" in _state(pid):
                break
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid), f"counting process {pid} outlived its parent"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_numba_and_rustbpe_stages_write_the_same_tokenizer(tmp_path: Path, small_corpus: list[Path]) -> None:
    """The whole stage, baseline and held-out report included: tokenizer.json byte for byte, same figures."""
    out = {}
    for trainer in ("numba", "rustbpe"):
        cfg = TokenizerConfig(vocab_size=4096, trainer=trainer, heldout_fraction=0.05, require_exact_vocab=True)
        figures = train_tokenizer(cfg, small_corpus, tmp_path / trainer)
        out[trainer] = ((tmp_path / trainer / "tokenizer.json").read_bytes(), figures["heldout"])
    assert out["numba"] == out["rustbpe"]


def test_numba_shortfall_is_filled_or_an_error() -> None:
    from crawl2score.tokenizer.bpe import VocabShortfallError

    ours = train_numba([["tiny corpus"] * 3], 1000, reserved=2)
    theirs = train_rustbpe([["tiny corpus"] * 3], 1000, reserved=2)
    assert ours.tokenizer.to_str() == theirs.tokenizer.to_str() and ours.filler_tokens > 0
    with pytest.raises(VocabShortfallError, match="reached only .* distinct pairs"):
        train_numba([["tiny corpus"] * 3], 1000, reserved=2, require_exact=True)
    assert learn_tokens(Counter(), 10) == ([bytes([b]) for b in range(256)], [0] * 256)  # no text: the bytes


def test_counts_beyond_int32_are_one_line() -> None:
    """The loop keeps positions and word counts in int32; more is a clear stop, not an overflow."""
    from crawl2score.errors import BadInput
    from crawl2score.tokenizer.merge_loop import word_arrays

    with pytest.raises(BadInput, match=r"seen 2,147,483,647 times; .* set tokenizer.byte_budget"):
        word_arrays(Counter({"ab": 2**31 - 1, "cd": 5}))


def test_a_read_only_install_without_a_home_still_trains(tmp_path: Path) -> None:
    """Numba refuses to import a `cache=True` module when neither the module's folder nor the home can
    hold its cache (found in review: a read-only image run by another user). The loop then caches in the
    temporary directory, with one warning, and trains."""
    import shutil

    copy = tmp_path / "install"
    shutil.copytree(REPO / "crawl2score", copy / "crawl2score", symlinks=True)
    shutil.rmtree(copy / "crawl2score" / "tokenizer" / "__pycache__", ignore_errors=True)
    (copy / "crawl2score" / "tokenizer" / "__pycache__").write_text("not a folder")  # nothing can go beside it
    (tmp_path / "home").write_text("not a folder either")
    (tmp_path / "tmp").mkdir()
    planted = tmp_path / "tmp" / f"crawl2score-numba-{os.getuid()}"
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)  # as another user could have made it first: not used, Numba reads its index with pickle
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "XDG_"))}
    env.update(HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"), PYTHONPATH=str(copy))
    code = (
        "import collections, logging; logging.basicConfig(level=logging.WARNING)\n"
        "from crawl2score.tokenizer.merge_loop import learn_tokens\n"
        "print(learn_tokens(collections.Counter({'abab': 2}), 2)[0][256:])"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )  # cwd: not the repo, whose crawl2score `-c` would import first
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[b'ab', b'abab']"
    assert "no writable folder for Numba's cache" in run.stderr
    assert any((tmp_path / "tmp").glob("crawl2score-numba-*/**/*.nbi"))  # the cache went there
    assert not any(planted.rglob("*.nbi"))  # into a private folder of its own
