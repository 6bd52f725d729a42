"""Security defaults, each checked: loopback server unless configured (and then only with API auth),
no pickle loads, no remote code, config paths validated, no credentials in configs, logs or artifacts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from crawl2score.config import Config, ConfigError, load_config
from crawl2score.server import AUTH_ENV, exposure_error, server_env

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("crawl2score", "model", "eval", "flows", "tasks", "infra", "benchmarks")


def _python_files() -> list[Path]:
    out = []
    for d in CODE_DIRS:
        root = REPO / d
        if root.is_symlink():  # crawl2score/<folder> links to the top-level folders, listed on their own
            continue
        out += [p for p in root.rglob("*.py") if not any(part.is_symlink() for part in [p, *p.parents])]
    return out


def test_server_defaults_to_loopback():
    cfg = Config()
    assert cfg.prefect.server_host == "127.0.0.1"
    env = server_env("/tmp/x", cfg.prefect.server_host, cfg.prefect.server_port)
    assert env["PREFECT_SERVER_API_HOST"] == "127.0.0.1"
    assert env["PREFECT_API_URL"].startswith("http://127.0.0.1:")


def test_non_loopback_server_needs_auth_string(tmp_path, capsys, monkeypatch):
    assert exposure_error("127.0.0.1", {}) is None and exposure_error("::1", {}) is None
    assert AUTH_ENV in exposure_error("0.0.0.0", {})
    assert exposure_error("0.0.0.0", {AUTH_ENV: "admin:secret"}) is None
    from crawl2score.cli import main

    monkeypatch.delenv(AUTH_ENV, raising=False)
    code = main(["server", "--workdir", str(tmp_path / "w"), "--set", "prefect.server_host=0.0.0.0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and AUTH_ENV in err


def test_auth_string_is_documented():
    text = (REPO / "docs" / "deployment.md").read_text()
    assert AUTH_ENV in text and "PREFECT_API_AUTH_STRING" in text


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            base = getattr(f.value, "id", "") if isinstance(f, ast.Attribute) else ""
            yield node, base, name


def test_no_pickle_loads_and_torch_load_is_weights_only():
    files = _python_files()
    assert len(files) > 30
    bad = []
    for path in files:
        for node, base, name in _calls(ast.parse(path.read_text(), str(path))):
            if base in ("pickle", "cloudpickle", "dill", "joblib") and name in ("load", "loads"):
                bad.append(f"{path}:{node.lineno} {base}.{name}")
            if base == "torch" and name == "load":
                kw = {k.arg: k.value for k in node.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    bad.append(f"{path}:{node.lineno} torch.load without weights_only=True")
    assert bad == []


def test_no_trust_remote_code_anywhere():
    hits = []
    for path in _python_files() + list((REPO / "eval").rglob("*.yaml")) + list((REPO / "configs").rglob("*.yaml")):
        text = path.read_text()
        if "trust_remote_code" in text.replace("trust_remote_code=False", "").replace("trust_remote_code: false", ""):
            hits.append(str(path))
    assert hits == []


def test_checkpoints_hold_no_pickles(tmp_path):
    import torch

    from crawl2score.model import Transformer, get_preset
    from crawl2score.model.train_checkpoint import save_checkpoint

    model = Transformer(get_preset("tiny").replace(vocab_size=64, max_seq_len=16, n_layers=2))
    step = save_checkpoint(tmp_path, 1, model, torch.optim.AdamW(model.parameters()), {"data_position": 0})
    names = {p.name for p in step.iterdir()}
    assert names and all(n.endswith((".safetensors", ".json")) for n in names), names


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("workdir=", "workdir"),
        ("prefect.api_url=http://admin:secret@10.0.0.1:4200/api", "credentials"),
        ("prefect.api_url=file:///etc/passwd", "http(s) URL"),
    ],
)
def test_config_paths_and_urls_are_validated(override, needle):
    with pytest.raises(ConfigError, match="^[^\n]*$") as info:
        load_config("tiny", [override])
    assert needle in str(info.value)
    assert "secret" not in str(info.value)


def test_workdir_that_is_a_file_or_holds_nul_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        load_config("tiny", [f"workdir={tmp_path / 'f'}"])
    (tmp_path / "nul.yaml").write_text('workdir: "a\\0b"\n')  # YAML's escape for a NUL byte
    with pytest.raises(ConfigError, match="NUL"):
        load_config(tmp_path / "nul.yaml")


def test_no_secrets_from_the_environment_in_trainer_logs_or_artifacts(tmp_path, tokens_dir):
    """Credentials in the environment never reach stdout, stderr or any file of the work directory."""
    from tests.train.conftest import run_trainer, tiny_config, write_config

    sentinel = "s3cr3t-9f8e7d6c"
    secrets = {AUTH_ENV: f"admin:{sentinel}", "PREFECT_API_KEY": sentinel, "HF_TOKEN": sentinel}
    cfg = write_config(tmp_path / "cfg.json", tiny_config(tokens_dir, steps=2, checkpoint_every=1))
    res = run_trainer(cfg, tmp_path / "w", env=secrets)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sentinel not in res.stdout + res.stderr
    for path in (tmp_path / "w").rglob("*"):
        if path.is_file():
            assert sentinel.encode() not in path.read_bytes(), path


def test_config_files_in_the_repo_hold_no_credentials():
    import re

    pattern = re.compile(r"(password|secret|token|api_key|auth_string)\s*[:=]\s*['\"]?[^\s'\"]{6,}", re.I)
    for path in list((REPO / "configs").rglob("*.yaml")) + [REPO / "prefect.yaml"]:
        assert not pattern.search(path.read_text()), path
