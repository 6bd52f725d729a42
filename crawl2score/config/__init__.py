"""The project's configuration: one pydantic model with a section per component.

A YAML file (a preset from ``configs/`` or the user's own) is read first, then ``--set section.key=value``
overrides. Every section forbids unknown keys, so a typo is an error naming the field instead of a
silently ignored setting. Errors are raised as :class:`ConfigError` with one line of text.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from crawl2score.config.data import DataConfig
from crawl2score.config.eval import EvalConfig
from crawl2score.config.launch import LaunchConfig
from crawl2score.config.tokenizer import TokenizerConfig
from crawl2score.errors import BadInput
from crawl2score.model.config import ModelArgs
from crawl2score.model.presets import PRESETS, get_preset
from crawl2score.model.train_config import TrainArgs

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_PRESET = "tiny"

# Settings that change how a stage runs (threads, batch sizes, the scheduler it runs on) or only what a later
# stage does, not what this stage writes; and paths its input key already stands for (the data stage's key
# or a fingerprint of the resolved files, so `corpus/` and its absolute path are one input). They are left
# out of the stage's key, so changing them neither redoes the stage nor stops a later stage run alone.
# Checked: the tokenizer is the same for any thread count and batch size; shards are cut at document
# boundaries by token count, so neither threads nor batch size move them.
NOT_OUTPUT: dict[str, tuple[str, ...]] = {
    "data": tuple(
        f"executor.{key}"
        for key in (
            *("kind", "workers", "start_method", "poll_s", "ray_address", "venv_path"),
            *("partition", "time", "qos", "cpus_per_task", "mem_per_cpu_gb", "sbatch_args"),
        )
    ),
    "tokenizer": ("input", "workers", "batch_docs", "shard_tokens", "encoder"),
    # both encoders write byte-identical shards (tests/tokenizer/test_encode.py, benchmarks/tokenizer.py)
    "tokens": ("input", "workers", "batch_docs", "encoder"),
}
# Values of a key that give the same output, recorded under one name in a stage's key and marker: numba
# learns rustbpe's very tokens (tests/tokenizer/test_merge_loop.py), so switching between them (same code
# otherwise) redoes nothing and stops no stage run alone. Messages show the recorded name: "rustbpe".
SAME_OUTPUT: dict[str, dict[str, dict[Any, Any]]] = {
    stage: {"trainer": {"numba": "rustbpe"}} for stage in ("tokenizer", "tokens")
}


class ConfigError(BadInput):
    """A configuration problem, always one line: what input, which field, what is wrong."""


class PrefectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    home: str | None = Field(None, description="PREFECT_HOME; default .prefect in the directory the command runs from")
    api_url: str | None = Field(None, description="a running server; default: ephemeral, or `crawl2score server`")
    server_host: str = "127.0.0.1"
    server_port: int = Field(4200, ge=1, le=65535)
    gpu_pool: str = "gpu"
    cpu_pool: str = "cpu"

    @field_validator("api_url")
    @classmethod
    def _no_credentials_in_url(cls, value: str | None) -> str | None:
        """Configs are copied into flow parameters, the UI and reports: credentials belong in the
        environment (PREFECT_API_AUTH_STRING / PREFECT_API_KEY), never in the URL."""
        if value is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http(s) URL such as http://127.0.0.1:4200/api")
            if parts.username or parts.password:
                raise ValueError("holds credentials; set PREFECT_API_AUTH_STRING in the environment instead")
        return value

    train_deployment: str | None = Field(
        None,
        description="run the pipeline's train stage as this deployment (e.g. train/train, on the gpu pool) "
        "instead of in-process; needs a server and a worker sharing the work directory",
    )
    heartbeat_s: int = Field(
        30, ge=30, description="flow-run heartbeat period of deployment runs (set on `crawl2score worker`)"
    )
    zombie_after_s: int = Field(
        120,
        ge=60,
        description="a deployment run silent this long is marked Crashed (automation made by `crawl2score deploy`)",
    )


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "tiny"
    workdir: str = "work"
    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelArgs = Field(default_factory=ModelArgs)
    train: TrainArgs = Field(default_factory=TrainArgs)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    launch: LaunchConfig = Field(default_factory=LaunchConfig)
    prefect: PrefectConfig = Field(default_factory=PrefectConfig)

    @field_validator("model", mode="before")
    @classmethod
    def _expand_model_preset(cls, value: Any) -> Any:
        """`model: {preset: NAME, key: value}` starts from a named preset, then overrides keys."""
        if isinstance(value, dict) and "preset" in value:
            value = dict(value)
            name = value.pop("preset")
            if name not in PRESETS:
                raise ValueError(f"unknown model preset {name!r} (known: {', '.join(sorted(PRESETS))})")
            base = get_preset(name).to_dict()
            base.update(value)
            return base
        return value

    @field_validator("workdir")
    @classmethod
    def _check_workdir(cls, value: str) -> str:
        """Fail here, in one line, rather than deep in a stage: empty, NUL bytes, or an existing file."""
        if not value.strip() or "\x00" in value:
            raise ValueError("must be a non-empty path without NUL bytes")
        path = Path(value).expanduser()
        if path.exists() and not path.is_dir():
            raise ValueError(f"{value} exists and is not a directory")
        return str(path)

    def section_dict(self, section: str) -> dict[str, Any]:
        """A section as plain JSON-able data, for subprocess configs and artifacts."""
        return self.model_dump(mode="json")[section]

    def stage_config(self, stage: str) -> dict[str, Any]:
        """The part of the config that decides a stage's output: what its key hashes (crawl2score.workdir).

        A stage's section less its `NOT_OUTPUT` keys, with `SAME_OUTPUT` values under one name (both tokenizer
        stages read the `tokenizer` section).
        Training is decided by the model and the train section less the keys that only change how a run is
        observed or stored (`train.log_every`, ..., see `TrainArgs.fingerprint_dict`), so changing those
        neither redoes nor blocks a resume.
        """
        if stage == "train":
            return {"model": self.section_dict("model"), "train": self.train.fingerprint_dict()}
        section = self.section_dict({"tokens": "tokenizer"}.get(stage, stage))
        for dotted in NOT_OUTPUT.get(stage, ()):
            node = section
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node[part]
            node.pop(leaf)
        for key, same in SAME_OUTPUT.get(stage, {}).items():
            section[key] = same.get(section[key], section[key])
        return section


# Where `section.key=value` overrides come from, as their errors name it: the CLI's flag, or a flow's parameter
# (a deployment run from the UI, where there is no `--set`).
CLI_OVERRIDES, FLOW_OVERRIDES = "--set", "overrides"


def _parse_override(item: str, given_as: str = CLI_OVERRIDES) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"{given_as} {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"{given_as} {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{given_as} {item!r}: value is not valid YAML ({exc.__class__.__name__})") from None
    return parts, value


def _apply_override(tree: dict[str, Any], parts: list[str], value: Any, item: str, given_as: str) -> None:
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{given_as} {item!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _format_validation_error(source: str, exc: ValidationError, overridden: set[str], given_as: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(root)"
    if any(loc == key or loc.startswith(key + ".") for key in overridden):
        source = given_as
    msg = err["msg"]
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        msg = "unknown key"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    # Keys come from the user and may hold newlines or control characters: escape them, one line stays one.
    loc = loc if loc.isprintable() else repr(loc)
    return f"{source}: {loc}: {' '.join(msg.split())}{more}"


def resolve_config_path(name_or_path: str | os.PathLike[str] | None) -> Path:
    """A path, or the name of a preset in configs/ (`tiny`, `small`, `medium`)."""
    if name_or_path is None:
        name_or_path = DEFAULT_PRESET
    path = Path(name_or_path)
    if not path.exists() and (CONFIG_DIR / f"{name_or_path}.yaml").exists():
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    return path


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
) -> Config:
    """Read a YAML config (or preset name), apply overrides, validate. Raises ConfigError (one line)."""
    cfg_path = resolve_config_path(path)
    source = str(cfg_path)
    if not cfg_path.is_file():
        raise ConfigError(f"{source}: config file not found")
    try:
        tree = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ConfigError(f"{source}: not valid YAML: {first}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections")
    return _validated(copy.deepcopy(tree), overrides, source, workdir)


def apply_overrides(config: Config, overrides: list[str] | None) -> Config:
    """`config` with `section.key=value` overrides, as `--set` gives them; a flow's `overrides` parameter.

    Why flows take them: a deployment run's `config` parameter replaces the deployed config whole, so
    changing one key that way means restating all the others. `overrides` changes just those keys.
    """
    if not overrides:
        return config
    if any(_parse_override(item, FLOW_OVERRIDES)[0] == ["model", "preset"] for item in overrides):
        # A validated config no longer knows which model keys its YAML set and which came from its preset:
        # kept, they would override the new preset's shape; dropped, keys such as a tiny vocab_size would go.
        raise ConfigError(
            "overrides: model.preset cannot change a loaded config (its model keys are all explicit now);"
            " set the model keys themselves, or pass a config file with that preset"
        )
    return _validated(config.model_dump(mode="json"), overrides, FLOW_OVERRIDES, given_as=FLOW_OVERRIDES)


def _validated(
    tree: dict[str, Any],
    overrides: list[str] | None,
    source: str,
    workdir: str | os.PathLike[str] | None = None,
    given_as: str = CLI_OVERRIDES,
) -> Config:
    overridden: set[str] = set()
    for item in overrides or []:
        parts, value = _parse_override(item, given_as)
        _apply_override(tree, parts, value, item, given_as)
        overridden.add(".".join(parts))
    if workdir is not None:
        tree["workdir"] = str(workdir)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc, overridden, given_as)) from None


def config_keys_markdown() -> str:
    """Every key of every section with its default and description: the reference in docs/configuration.md."""
    import dataclasses

    from pydantic import TypeAdapter

    rows = ["| key | default | description |", "|---|---|---|"]

    def walk(prefix: str, cls: Any) -> None:
        if isinstance(cls, type) and issubclass(cls, BaseModel):
            for name, field in cls.model_fields.items():
                ann = field.annotation
                if isinstance(ann, type) and (issubclass(ann, BaseModel) or dataclasses.is_dataclass(ann)):
                    walk(f"{prefix}{name}.", ann)
                    continue
                default = field.get_default(call_default_factory=True)
                rows.append(f"| `{prefix}{name}` | `{default!r}` | {field.description or ''} |")
        elif dataclasses.is_dataclass(cls):
            schema = TypeAdapter(cls).json_schema().get("properties", {})
            for f in dataclasses.fields(cls):
                if f.default is not dataclasses.MISSING:
                    default = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    default = f.default_factory()
                else:
                    default = None
                desc = schema.get(f.name, {}).get("description", "")
                rows.append(f"| `{prefix}{f.name}` | `{default!r}` | {desc} |")

    walk("", Config)
    return "\n".join(rows)
