"""Counting pre-tokens ("words") for the numba trainer, on several processes.

Kept apart from `merge_loop.py` so a counting process imports only `regex` and numpy (not numba). Python's
`regex` module splits with our pattern as fancy-regex (rustbpe, tiktoken) and HF's Split do (tests pin the
three together), at ~15 MB/s on one core here: faster than rustbpe's own counting on two. It holds the GIL
while it matches, so the second core needs a second process, not a thread (BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import queue
import re
import select
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import regex

log = logging.getLogger("crawl2score.tokenizer")


# Characters counted in the caller's process before any counting process starts: starting one costs ~0.2 s,
# what counting ~3 MB costs, so a small corpus is counted faster without them.
INLINE_CHARS = 2_000_000

# A character in one of these classes is assigned (categories L, M, N, P, S) or white space.
_ASSIGNED = r"[\p{L}\p{M}\p{N}\p{P}\p{S}\s]"


@cache
def _newer_characters() -> tuple[tuple[int, int], ...]:
    """The code points `regex` knows as assigned and the encoder does not, as inclusive ranges.

    `regex` follows the newest Unicode; fancy-regex (tiktoken, the shard encoder; rustbpe) and Oniguruma (HF)
    an older one that they share (test_encode.py). Characters assigned since then are letters or symbols to
    `regex` and the unassigned "gap" to the encoder. Found by asking both engines about every code point
    (~0.3 s, once per process), so no Unicode version is written down here to go stale. tiktoken with the
    256 bytes as its only tokens returns exactly the text its pattern matched.
    """
    import tiktoken

    everything = "".join(map(chr, itertools.chain(range(0xD800), range(0xE000, 0x110000))))
    runs = regex.compile(_ASSIGNED + "+", flags=regex.V1)
    encoder = tiktoken.Encoding(
        "assigned", pat_str=runs.pattern, mergeable_ranks={bytes([b]): b for b in range(256)}, special_tokens={}
    )
    ours, theirs = set("".join(runs.findall(everything))), set(bytes(encoder.encode_ordinary(everything)).decode())
    newer = ours - theirs
    if older := theirs - ours:  # the other way round no pattern here corrects: say so
        log.warning(
            "tokenizer: the regex module %s knows %d characters as unassigned that tiktoken knows (e.g. U+%04X); "
            "texts with them are counted with other splits than the shards get: upgrade regex",
            regex.__version__,
            len(older),
            ord(min(older)),
        )
    spans: list[list[int]] = []
    for c in sorted(map(ord, newer)):
        if spans and spans[-1][1] == c - 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    return tuple((a, b) for a, b in spans)


@dataclass(frozen=True)
class Splitter:
    """`pattern` (fancy-regex syntax) for `regex`, splitting as the encoder does.

    `exact` takes the newer characters (`newer`: inclusive code point ranges) out of each \\p{..} class,
    which makes `regex` ~3.5x slower, so only a text that has one of them is split with it; the others get
    `pattern` as it is. Looking for them with a regex set costs more than the split itself; a table lookup
    over the text's code points costs ~3%. Plain data, so a counting process gets it pickled.
    """

    pattern: str
    exact: str
    newer: tuple[tuple[int, int], ...]

    def split(self, text: str) -> list[str]:
        if self.newer and not text.isascii():
            code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
            if _table(self.newer)[code_points].any():
                return _compiled(self.exact).findall(text)
        return _compiled(self.pattern).findall(text)


@cache
def _table(spans: tuple[tuple[int, int], ...]) -> np.ndarray:
    table = np.zeros(0x110000, np.bool_)
    for a, b in spans:
        table[a : b + 1] = True
    return table


@cache
def splitter(pattern: str) -> Splitter:
    newer = _newer_characters()
    if not newer:
        return Splitter(pattern, pattern, ())
    members = "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in newer)
    exact = re.sub(r"\\p\{(\w+)\}", lambda m: f"[{m.group(0)}--[{members}]]", pattern)
    return Splitter(pattern, exact, newer)


@cache
def _compiled(pattern: str) -> regex.Pattern:
    # V1: the pattern's [[..]&&[..]] is a set intersection (fancy-regex syntax); V0 reads it as a literal.
    # (?-f): simple case folding for (?i:...), as fancy-regex does; V1 defaults to full folding.
    return regex.compile("(?-f)" + pattern, flags=regex.V1)


def _count(texts: list[str], split: Splitter) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(split.split(text))
    return counts


def count_batch(texts: list[str], pattern: str) -> Counter[str]:
    """How often each piece of `pattern` (the encoder's, fancy-regex syntax) occurs in `texts`."""
    return _count(texts, splitter(pattern))


def count_words(
    batches: Iterable[list[str]], pattern: str, workers: int = 1, inline_chars: int = INLINE_CHARS
) -> Counter[str]:
    """How often each pre-token occurs in all batches; `workers` > 1 counts batches in that many processes
    once `inline_chars` characters have been counted here.

    The processes run `_serve` (started with `sys.executable -c`), fed one batch at a time as a JSON line on
    stdin, answering with its counts on stdout. Not multiprocessing: its spawned processes import the
    caller's main module again (a script without a main guard would run its whole top level in each; a
    Prefect flow run imports `prefect.engine`), and fork is unsafe beside a worker's threads. A process that
    dies (killed, out of memory) has its batch and the rest counted here, with a warning; one that loses
    its parent ends, as its stdin closes.
    """
    total: Counter[str] = Counter()
    split = splitter(pattern)  # here, once: the processes get it worked out
    batches = iter(batches)
    counted = 0
    for batch in batches:
        total.update(_count(batch, split))
        counted += sum(map(len, batch))
        if workers > 1 and counted >= inline_chars:
            break
    else:
        return total
    jobs: queue.Queue[list[str] | None] = queue.Queue(maxsize=workers)
    done: queue.Queue[Counter[str] | Exception] = queue.Queue()
    feeders = [threading.Thread(target=_feed, args=(split, jobs, done), daemon=True) for _ in range(workers)]
    for feeder in feeders:
        feeder.start()

    def collect() -> None:
        while not done.empty():
            counts = done.get()
            if isinstance(counts, Exception):
                raise counts
            total.update(counts)

    try:
        for batch in batches:
            while True:  # a feeder that died of a bug would leave a full queue to wait on forever
                try:
                    jobs.put(batch, timeout=1)
                    break
                except queue.Full:
                    collect()
                    if not any(feeder.is_alive() for feeder in feeders):
                        raise RuntimeError("tokenizer: every word-counting thread ended; see above") from None
            collect()
    finally:
        for feeder in feeders:  # one end mark each, unless it is gone
            while feeder.is_alive():
                try:
                    jobs.put(None, timeout=1)
                    break
                except queue.Full:
                    continue
        for feeder in feeders:
            feeder.join()
    collect()
    return total


# The counting process: this very package's module, even from another working directory (a checkout there
# would come first on `-c`'s path) and without putting an install's site-packages before the standard library.
_BOOT = (
    "import sys\n"
    "if sys.path and sys.path[0] == '': del sys.path[0]\n"
    "if {root!r} not in sys.path: sys.path.insert(0, {root!r})\n"
    "from crawl2score.tokenizer.pretokenize import _serve\n"
    "_serve()\n"
)
READY = b"ready\n"
START_TIMEOUT_S = 120  # a process that has not said READY by then is not a Python that can count here


def _start(split: Splitter) -> subprocess.Popen[bytes] | None:
    """A counting process that has read the splitter and said READY, or None (with a warning why not)."""
    root = str(Path(__file__).resolve().parents[2])
    try:
        # a session of its own: Ctrl-C in a terminal reaches the stage, which then ends its processes itself
        process = subprocess.Popen(
            [sys.executable, "-c", _BOOT.format(root=root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
    except Exception as exc:  # noqa: BLE001 (OSError, or TypeError when sys.executable is None)
        log.warning("tokenizer: cannot start a word-counting process (%s); counting here, on one core", exc)
        return None
    try:
        _send(process, {"pattern": split.pattern, "exact": split.exact, "newer": split.newer})
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
        said = process.stdout.readline() if ready else b""  # type: ignore[union-attr]
    except OSError:
        said = b""
    if said != READY:
        _end(process, kill=True)
        log.warning(
            "tokenizer: a word-counting process did not start (%s); counting here, on one core",
            "no answer" if not said else f"it said {said[:80]!r}",
        )
        return None
    return process


def _end(process: subprocess.Popen[bytes], kill: bool = False) -> int:
    if kill:
        with contextlib.suppress(OSError):
            process.kill()
    for pipe in (process.stdin, process.stdout):
        with contextlib.suppress(OSError):
            pipe.close()  # type: ignore[union-attr]  # closing stdin ends it at the end of its input
    return process.wait()


def _died(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return f"killed by {name}" + (" (often the out-of-memory killer)" if name == "SIGKILL" else "")
    return f"exit code {code}; its error is above, on stderr"


def _feed(split: Splitter, jobs: queue.Queue[list[str] | None], done: queue.Queue[Counter[str] | Exception]) -> None:
    """One counting process and the thread that talks to it, one batch at a time (so neither side can block
    the other on a full pipe); after the process dies, this thread counts the remaining batches itself. An
    error goes to `done` for the caller to raise, and the thread goes on taking batches, so the caller
    never waits on a full queue."""
    process = _start(split)
    try:
        while (batch := jobs.get()) is not None:
            try:
                counts = None
                if process is not None:
                    try:
                        _send(process, batch)
                        line = process.stdout.readline()  # type: ignore[union-attr]
                        counts = Counter(json.loads(line.decode("utf-8", "surrogatepass")))
                    except (OSError, ValueError):  # died before reading, or while writing its counts
                        log.warning(
                            "tokenizer: a word-counting process ended (%s); its batches are counted in the stage's "
                            "own process, on one core",
                            _died(_end(process, kill=True)),
                        )
                        process, counts = None, None
                done.put(counts if counts is not None else _count(batch, split))
            except Exception as exc:  # noqa: BLE001 (handed to the caller, which raises it)
                done.put(exc)
    finally:
        if process is not None:
            _end(process)


def _send(process: subprocess.Popen[bytes], message: object) -> None:
    # surrogatepass: a caller's text may hold lone surrogates; the counts then hold them back the same way
    process.stdin.write(json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass"))  # type: ignore[union-attr]
    process.stdin.write(b"\n")  # type: ignore[union-attr]
    process.stdin.flush()  # type: ignore[union-attr]


def _serve() -> None:
    """A counting process: the splitter as the first line (answered with READY), then a batch per line, its
    counts per line, until its input ends."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    config = json.loads(stdin.readline().decode("utf-8", "surrogatepass"))
    split = Splitter(config["pattern"], config["exact"], tuple(tuple(span) for span in config["newer"]))
    stdout.write(READY)
    stdout.flush()
    for line in stdin:
        counts = _count(json.loads(line.decode("utf-8", "surrogatepass")), split)
        stdout.write(json.dumps(counts, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n")
        stdout.flush()
