"""Stage keys, markers, atomic writes and the report."""

from __future__ import annotations

import json
import os

import pytest

from crawl2score.workdir import (
    MARKER,
    atomic_dir,
    atomic_write_json,
    is_done,
    missing_input,
    stage_dir,
    stage_key,
    update_report,
    write_marker,
)


def test_stage_key_depends_on_config_and_inputs() -> None:
    base = stage_key("tokenizer", {"vocab_size": 10}, ["abc"])
    assert base == stage_key("tokenizer", {"vocab_size": 10}, ["abc"])
    assert base != stage_key("tokenizer", {"vocab_size": 11}, ["abc"])
    assert base != stage_key("tokenizer", {"vocab_size": 10}, ["abd"])
    assert base != stage_key("tokens", {"vocab_size": 10}, ["abc"])


def test_marker_round_trip(tmp_path) -> None:
    assert not is_done(tmp_path, "data", "k1")
    write_marker(tmp_path, "data", "k1", {"docs": 3})
    assert is_done(tmp_path, "data", "k1")
    assert not is_done(tmp_path, "data", "k2")


def test_atomic_dir_leaves_nothing_on_failure(tmp_path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("killed")
    assert not target.exists()
    assert os.listdir(tmp_path) == []
    with atomic_dir(target) as tmp:
        (tmp / "whole.txt").write_text("y")
    assert (target / "whole.txt").read_text() == "y"


def test_report_merges_stages(tmp_path) -> None:
    update_report(tmp_path, "data", {"docs_out": 10, "per_language": {"en": 6}})
    update_report(tmp_path, "tokenizer", {"vocab_size": 4096, "heldout": {"en": 6.810734, "langs": ["en"]}})
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["data"]["docs_out"] == 10 and report["tokenizer"]["vocab_size"] == 4096
    md = (tmp_path / "report.md").read_text()
    assert "| per_language.en | 6 |" in md and "## tokenizer" in md
    assert "| heldout.en | 6.811 |" in md and "| heldout.langs | ['en'] |" in md  # as the UI's artifacts show them


def test_atomic_write_json(tmp_path) -> None:
    atomic_write_json(tmp_path / "a" / "x.json", {"k": "中文"})
    assert json.loads((tmp_path / "a" / "x.json").read_text(encoding="utf-8")) == {"k": "中文"}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]


def test_missing_input_names_the_first_stage_to_run(tmp_path) -> None:
    """One check for every stage's inputs: what is missing, what to run, and the config key that replaces it."""
    from crawl2score.config import Config

    cfg = Config.model_validate({"workdir": str(tmp_path)})
    assert missing_input(cfg, "data") is None
    assert missing_input(cfg, "tokenizer") == (
        f"{tmp_path}: the data stage has not completed (run `crawl2score data`, or set tokenizer.input)"
    )
    assert "the data stage" in missing_input(cfg, "tokens")  # tokens reads the corpus and the tokenizer
    assert "the train stage" in missing_input(cfg, "eval") and "eval.checkpoints" in missing_input(cfg, "eval")
    write_marker(tmp_path, "data", "k", {})
    assert missing_input(cfg, "tokenizer") is None
    assert missing_input(cfg, "tokens") == (
        f"{tmp_path}: the tokenizer stage has not completed (run `crawl2score tokenizer`)"
    )
    assert "the tokens stage" in missing_input(cfg, "train")
    write_marker(tmp_path, "tokens", "k", {})
    assert missing_input(cfg, "train") is None
    (stage_dir(tmp_path, "tokens") / MARKER).write_text("{}")  # emptied by hand or cut short: not a completed stage
    assert "the tokens stage" in missing_input(cfg, "train")
    (stage_dir(tmp_path, "tokens") / MARKER).write_text('{"finished": 1}')  # no key: made by hand, not a run
    assert missing_input(cfg, "train") == (
        f"{tmp_path}: the tokens stage's marker has no key (run `crawl2score tokens --force`)"
    )
    given = Config.model_validate(
        {"workdir": str(tmp_path / "other"), "tokenizer": {"input": "corpus/"}, "eval": {"checkpoints": ["ckpt"]}}
    )
    assert missing_input(given, "tokenizer") is None and missing_input(given, "eval") is None
    assert "the tokenizer stage" in missing_input(given, "tokens")


def test_missing_input_names_settings_changed_since_an_earlier_stage_ran(tmp_path) -> None:
    """A stage run alone after an earlier stage's settings changed stops with the changed keys and the run
    that redoes them; settings that do not decide an earlier stage's output never stop it."""
    from crawl2score.config import Config
    from crawl2score.workdir import stale_input

    def cfg(**sections):
        return Config.model_validate({"workdir": str(tmp_path), **sections})

    base = cfg()
    for stage in ("data", "tokenizer", "tokens", "train"):
        write_marker(tmp_path, stage, "k", {}, base.stage_config(stage))
    assert missing_input(base, "train") is None and stale_input(base, "eval") is None
    other = cfg(tokenizer={"vocab_size": 50_000, "language_weights": {"en": 1.0, "zh": 0.5}})
    assert missing_input(other, "tokens") == (
        f"{tmp_path}: the tokenizer stage's output was made with other settings (tokenizer.language_weights.zh 1.0 -> "
        "0.5, tokenizer.vocab_size 102400 -> 50000); redo them with this run's settings first: "
        "`crawl2score run --stages tokenizer,tokens` with the same config and --set (from the UI: a pipeline "
        'run with stages ["tokenizer", "tokens"] and the same overrides)'
    )
    # a run of several stages names them all (the CLI's `run --stages tokens,train` and the pipeline flow)
    assert "`crawl2score run --stages tokenizer,tokens,train`" in missing_input(other, "tokens", through="train")
    # two stages back, and for eval (which runs without a train marker too): the earliest stale stage
    assert "the data stage's output was made with other settings (data.minhash_ngram 5 -> 4)" in missing_input(
        cfg(data={"minhash_ngram": 4}), "train"
    )
    assert "`crawl2score run --stages data,tokenizer,tokens,train,eval`" in stale_input(
        cfg(data={"minhash_ngram": 4}), "eval"
    )
    changed = stale_input(cfg(model={"preset": "small"}), "eval")
    assert "the train stage's output was made with other settings (model." in changed and ", and " in changed
    assert stale_input(cfg(model={"preset": "small"}, eval={"checkpoints": ["ckpt"]}), "eval") is None
    # how a stage runs, what only a later stage uses, and the input path spelled another way: no stop
    harmless = [
        {"train": {"log_every": 3}},
        {"tokenizer": {"workers": 1, "batch_docs": 64, "encoder": "tokenizers"}},
        {"tokenizer": {"input": str(tmp_path / "data" / "output")}},
        {"tokenizer": {"trainer": "rustbpe"}},  # numba learns rustbpe's tokens: one output, one key
        {"data": {"executor": {"workers": 1, "kind": "local", "start_method": "spawn"}}},
    ]
    for settings in harmless:
        assert missing_input(cfg(**settings), "train") is None, settings
        assert stale_input(cfg(**settings), "eval") is None, settings
    assert '(tokenizer.trainer "rustbpe" -> "tokenizers")' in missing_input(
        cfg(tokenizer={"trainer": "tokenizers"}), "tokens"
    )
    assert missing_input(cfg(tokenizer={"shard_tokens": 4096}), "tokens") is None  # the tokenizer is the same
    assert "(tokenizer.shard_tokens 50000000 -> 4096)" in missing_input(cfg(tokenizer={"shard_tokens": 4096}), "train")
    # an earlier stage redone since (new key) with the settings unchanged: what was made from it is stale
    write_marker(tmp_path, "tokenizer", "k", {}, base.stage_config("tokenizer"), ["d1"])
    write_marker(tmp_path, "tokens", "k", {}, base.stage_config("tokens"), ["d1", "k"])
    write_marker(tmp_path, "train", "t", {}, base.stage_config("train"), ["k"])
    write_marker(tmp_path, "data", "d1", {}, base.stage_config("data"), [])
    assert missing_input(base, "train") is None and stale_input(base, "eval") is None
    write_marker(tmp_path, "tokenizer", "k2", {}, base.stage_config("tokenizer"), ["d1"])
    assert missing_input(base, "train") == (
        f"{tmp_path}: the tokens stage's output was made from an earlier tokenizer output (the tokenizer stage "
        "was redone since); redo them with this run's settings first: `crawl2score run --stages tokens,train` "
        'with the same config and --set (from the UI: a pipeline run with stages ["tokens", "train"] and the '
        "same overrides)"
    )
    write_marker(tmp_path, "tokens", "k3", {}, base.stage_config("tokens"), ["d1", "k2"])
    assert "the train stage's output was made from an earlier tokens output" in stale_input(base, "eval")
    write_marker(tmp_path, "tokens", "k", {})  # a marker from before settings were recorded: not checked
    assert missing_input(cfg(tokenizer={"shard_tokens": 4096, "vocab_size": 50_000}), "train") is not None  # tokenizer
    write_marker(tmp_path, "tokenizer", "k", {})
    write_marker(tmp_path, "data", "k", {})
    assert missing_input(cfg(tokenizer={"vocab_size": 50_000}), "train") is None


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_atomic_outputs_get_the_umask_modes(tmp_path, umask, file_mode, dir_mode) -> None:
    """mkstemp/mkdtemp create owner-only names; what we rename into place has open/mkdir's modes, so a
    worker or server running as another user can read it (and a user's stricter umask still holds)."""
    from crawl2score.model import Transformer, get_preset, save_model

    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "m.json", {})
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("x")
        step = save_model(Transformer(get_preset("tiny")), tmp_path / "ckpt" / "step-1")
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "d").stat().st_mode & 0o777 == dir_mode
    assert step.stat().st_mode & 0o777 == dir_mode
    assert (step / "model.safetensors").stat().st_mode & 0o777 == file_mode


def test_select_stages_rejects_typos_and_forced_stages_outside_the_run() -> None:
    from crawl2score.workdir import STAGES, StageNameError, select_stages

    assert select_stages(None, None) == (list(STAGES), [])
    assert select_stages(["eval", "data"], ["all"]) == (["data", "eval"], ["data", "eval"])
    assert select_stages(None, ["train", "data"]) == (list(STAGES), ["data", "train"])
    with pytest.raises(StageNameError, match="stages tokenz: unknown stage 'tokenz'"):
        select_stages(["tokenz"], None)
    with pytest.raises(StageNameError, match="force trian: unknown stage 'trian'"):
        select_stages(None, ["trian"])
    with pytest.raises(StageNameError, match=r"--force train: not a stage this run runs \(eval\)"):
        select_stages(["eval"], ["train"], ("--stages", "--force"))
    with pytest.raises(StageNameError, match="stages: no stage named"):
        select_stages([], None)  # an empty list is a mistake, not a run that does nothing
