"""One configuration for every shoal service: a TOML file, environment variables, the CLI.

Precedence is CLI > environment > file > defaults. The environment name of an option is
``SHOAL_<SECTION>_<KEY>`` (``SHOAL_KAFKA_BROKERS``, ``SHOAL_ALERTS_SMTP_PASSWORD``) so that
containers and systemd units can set anything without a file, and secrets need not sit in one.
The CLI level is not handled here: :func:`apply_defaults` turns file and environment values
into argparse defaults, so an explicit flag still wins and ``--help`` shows the effective value.

The schema is a set of dataclasses; unknown keys in the file are errors (a typo in an alert
setting would otherwise silently disable alerting for months), while unknown ``SHOAL_*``
variables are only reported by ``shoal config check`` because other tools share the prefix.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

ENV_PREFIX = "SHOAL_"
CONFIG_ENV = "SHOAL_CONFIG"
DEFAULT_FILE = "shoal.toml"
MASK = "***"
SECRET_WORDS = frozenset({"token", "password", "secret", "key"})


class ConfigError(Exception):
    """An invalid file or value; its message is one line naming the file, section and key."""


def opt(default: Any, help: str, **meta: Any) -> Any:
    """A schema field; ``help`` says what the option is for (lists need ``field``)."""
    return field(default=default, metadata={"help": help, **meta})


def about(help: str, **meta: Any) -> dict[str, Any]:
    """Metadata of a list option, which needs ``field(default_factory=list)`` itself."""
    return {"help": help, **meta}


@dataclass
class KafkaSettings:
    brokers: str = opt("localhost:9092", "bootstrap servers, comma-separated")
    topic: str = opt("shoal.posts", "topic the collectors publish to")
    partitions: int = opt(4, "partitions shoal creates the topic with (more = more processors)")
    deadletter_topic: bool = opt(True, "also publish dead letters to shoal.deadletter")


@dataclass
class FlowSettings:
    data_dir: str = opt("", "where hourly files, the catalog and recovery state live")
    tz: str = opt("UTC", "zone naming days and hours")
    partition_by: str = opt("created", "hour of a post: created or retrieved",
                            choices=("created", "retrieved"))
    lateness: float = opt(300.0, "seconds an hour stays open after the stream passed it")
    idle_exit: float | None = opt(None, "seal everything and exit after this many idle seconds")
    workers: int = opt(1, "Bytewax workers in the process")
    seal_processes: int = opt(2, "helper processes sealing hours beside the dataflow (0: inline)")
    epoch_seconds: float = opt(2.0, "how often recovery state is snapshotted")
    recovery: bool = opt(True, "keep Bytewax recovery state under DIR/_recovery")
    log_level: str = opt("info", "debug, info, warning or error",
                         choices=("debug", "info", "warning", "error"))


@dataclass
class MediaSettings:
    enabled: bool = opt(True, "download the images and videos of posts")
    domain_parallelism: int = opt(2, "concurrent downloads per host")
    throttle: float = opt(0.2, "seconds between two requests to one host")
    retries: int = opt(3, "retries of a failed download")
    max_bytes: int = opt(200 * 1024 * 1024, "largest file downloaded")
    folder_strategy: str = opt("content", "content, flat, hostname or prefix-N")
    media_types: list[str] = field(default_factory=list, metadata=about(
        "only these types (image, video/mp4...); empty: all"))
    user_agent: str = opt("shoal-fetch/0.1 (+research media archiver)", "User-Agent header")


@dataclass
class MetricsSettings:
    port: int = opt(0, "port of /metrics and /healthz; 0 = no server")
    host: str = opt("127.0.0.1", "address to bind; 0.0.0.0 inside a container")
    seal_stale_seconds: float | None = opt(
        None, "/healthz reports not ok when no hour was sealed for this long")
    post_stale_seconds: float | None = opt(
        None, "/healthz reports not ok when no post arrived for this long")


@dataclass
class AlertsSettings:
    collector_silence_minutes: float = opt(30.0, "alert when a collector delivers nothing")
    seal_silence_minutes: float = opt(120.0, "alert when no hour is sealed (keep > 60)")
    check_seconds: float = opt(60.0, "how often conditions are checked")
    expect_collectors: list[str] = field(default_factory=list, metadata=about(
        "collectors that must deliver even if never seen"))
    daily_report: bool = opt(True, "send each finished day's report")
    smtp_host: str = opt("", "SMTP server; empty = no email")
    smtp_port: int = opt(587, "SMTP port")
    smtp_starttls: bool = opt(True, "upgrade the connection with STARTTLS")
    smtp_ssl: bool = opt(False, "implicit TLS (port 465) instead of STARTTLS")
    smtp_user: str = opt("", "SMTP login; empty = no login")
    smtp_password: str = opt("", "SMTP password")
    smtp_from: str = opt("", "sender address")
    smtp_to: list[str] = field(default_factory=list, metadata=about("recipient addresses"))
    webhook_url: str = opt("", "URL that receives a JSON POST per notice; empty = none",
                           mask="url")
    subject_prefix: str = opt("[shoal]", "first word of every subject")
    timeout_seconds: float = opt(20.0, "network timeout of one delivery")


@dataclass
class HooksSettings:
    commands: list[str] = field(default_factory=list, metadata=about(
        "command templates run per sealed file; fields {path} {relpath} {name} {day} {hour} "
        "{platform} {kind}", split=False))
    kinds: list[str] = field(default_factory=list, metadata=about(
        "only files of these kinds (IDs, tweets, posts, users, media, report); empty: all"))
    attempts: int = opt(5, "tries of one hook before it is given up")
    backoff_seconds: float = opt(10.0, "wait after the first failure; doubles each try")
    max_backoff_seconds: float = opt(600.0, "longest wait between two tries")
    timeout_seconds: float = opt(3600.0, "a run taking longer is killed and counts as failed")
    queue_size: int = opt(1000, "hooks waiting in memory; more wait in the queue file")


@dataclass
class CollectorsSettings:
    name: str = opt("", "default --collector name of this machine")
    twitter_bearer_token: str = opt("", "Twitter API v2 bearer token",
                                    env_aliases=("TWITTER_BEARER_TOKEN",))


SECTIONS: dict[str, type] = {
    "kafka": KafkaSettings,
    "flow": FlowSettings,
    "media": MediaSettings,
    "metrics": MetricsSettings,
    "alerts": AlertsSettings,
    "hooks": HooksSettings,
    "collectors": CollectorsSettings,
}


@dataclass
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    flow: FlowSettings = field(default_factory=FlowSettings)
    media: MediaSettings = field(default_factory=MediaSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    alerts: AlertsSettings = field(default_factory=AlertsSettings)
    hooks: HooksSettings = field(default_factory=HooksSettings)
    collectors: CollectorsSettings = field(default_factory=CollectorsSettings)
    # "section.key" -> "default" | "file" | "env NAME"; where each value came from.
    sources: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    ignored_env: list[str] = field(default_factory=list)

    def get(self, section: str, key: str) -> Any:
        return getattr(getattr(self, section), key)

    def source(self, section: str, key: str) -> str:
        return self.sources.get(f"{section}.{key}", "default")


# --------------------------------------------------------------------------- schema helpers


def options(section: str) -> list[tuple[str, Any, dataclasses.Field[Any]]]:
    """(key, type, field) of a section, types resolved (annotations are strings here)."""
    cls = SECTIONS[section]
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name], f) for f in dataclasses.fields(cls)]


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section}_{key}".upper()


def is_secret(key: str, fld: dataclasses.Field[Any] | None = None) -> bool:
    """Named like a secret; the webhook URL is masked too, since chat webhooks embed tokens."""
    if fld is not None and fld.metadata.get("mask"):
        return True
    return any(part in SECRET_WORDS for part in key.lower().split("_"))


def _kind(typ: Any) -> tuple[str, bool]:
    """('str'|'int'|'float'|'bool'|'list', optional)."""
    args = typing.get_args(typ)
    optional = type(None) in args
    if optional:
        typ = next(a for a in args if a is not type(None))
    if typing.get_origin(typ) is list:
        return "list", optional
    return typ.__name__, optional


def _coerce(raw: Any, typ: Any, fld: dataclasses.Field[Any], where: str, from_env: bool) -> Any:
    kind, optional = _kind(typ)
    if from_env:
        text = str(raw).strip()
        if optional and text.lower() in ("", "none", "null"):
            return None
        if kind == "bool":
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{where}: expected true or false, got {text!r}")
        if kind == "list":
            if text.startswith("["):
                try:
                    raw = orjson.loads(text)
                except orjson.JSONDecodeError:
                    raise ConfigError(f"{where}: not a JSON list: {text!r}") from None
            elif fld.metadata.get("split", True):
                raw = [p.strip() for p in text.split(",") if p.strip()]
            else:
                raw = [text] if text else []
        elif kind in ("int", "float"):
            try:
                raw = int(text) if kind == "int" else float(text)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {text!r}") from None
        else:
            raw = text
    if raw is None and optional:
        return None
    if kind == "bool":
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: expected true or false, got {raw!r}")
        return raw
    if kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{where}: expected an integer, got {raw!r}")
        return raw
    if kind == "float":
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ConfigError(f"{where}: expected a number, got {raw!r}")
        return float(raw)
    if kind == "list":
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise ConfigError(f"{where}: expected a list of strings, got {raw!r}")
        return list(raw)
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: expected a string, got {raw!r}")
    return raw


# --------------------------------------------------------------------------- loading


def find_file(explicit: str | Path | None, env: Mapping[str, str] | None = None) -> Path | None:
    """--config, else $SHOAL_CONFIG, else ./shoal.toml when it exists; an explicit one must."""
    env = os.environ if env is None else env
    chosen = explicit or env.get(CONFIG_ENV) or None
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        return path
    default = Path(DEFAULT_FILE)
    return default if default.is_file() else None


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None,
         *, search: bool = True) -> Settings:
    """Defaults, then the file, then the environment; validated as a whole."""
    env = os.environ if env is None else env
    file = find_file(path, env) if search else (Path(path) if path else None)
    settings = Settings(file=file)
    if file is not None:
        _apply_file(settings, file)
    _apply_env(settings, env)
    validate(settings)
    return settings


def _apply_file(settings: Settings, file: Path) -> None:
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from None
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{file}: unknown section [{section}] "
                              f"(known: {', '.join(SECTIONS)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: {section} must be a table ([{section}])")
        known = {name: (typ, fld) for name, typ, fld in options(section)}
        target = getattr(settings, section)
        for key, raw in table.items():
            if key not in known:
                raise ConfigError(f"{file}: unknown key {key!r} in [{section}] "
                                  f"(known: {', '.join(known)})")
            typ, fld = known[key]
            value = _coerce(raw, typ, fld, f"{file}: [{section}] {key}", from_env=False)
            setattr(target, key, value)
            settings.sources[f"{section}.{key}"] = "file"


def _apply_env(settings: Settings, env: Mapping[str, str]) -> None:
    claimed = {CONFIG_ENV}
    for section in SECTIONS:
        target = getattr(settings, section)
        for key, typ, fld in options(section):
            names = [env_name(section, key), *fld.metadata.get("env_aliases", ())]
            claimed.update(names)
            for name in names:  # the SHOAL_ name first: it beats an alias
                # Empty counts as unset: compose passes "${X:-}" through as "" when X is unset.
                if env.get(name, "").strip():
                    value = _coerce(env[name], typ, fld, f"environment {name}", from_env=True)
                    setattr(target, key, value)
                    settings.sources[f"{section}.{key}"] = f"env {name}"
                    break
    prefixes = tuple(f"{ENV_PREFIX}{s.upper()}_" for s in SECTIONS)
    settings.ignored_env = sorted(n for n in env if n.startswith(prefixes) and n not in claimed)


def validate(settings: Settings) -> None:
    """Cross-field and range checks; the first problem found is the error."""
    where = str(settings.file) if settings.file else "configuration"

    def bad(section: str, key: str, why: str) -> ConfigError:
        src = settings.source(section, key)
        origin = f"environment {src[4:]}" if src.startswith("env ") else f"{where}: [{section}]"
        return ConfigError(f"{origin} {key}: {why}")

    for section in SECTIONS:
        for key, _typ, fld in options(section):
            value = settings.get(section, key)
            choices = fld.metadata.get("choices")
            if choices and value not in choices:
                raise bad(section, key, f"{value!r} is not one of {', '.join(choices)}")
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise bad(section, key, f"must not be negative, got {value}")
    k, m, a, h = settings.kafka, settings.metrics, settings.alerts, settings.hooks
    if k.partitions < 1:
        raise bad("kafka", "partitions", "must be at least 1")
    if settings.flow.workers < 1:
        raise bad("flow", "workers", "must be at least 1")
    for section, obj, key in (("metrics", m, "port"), ("alerts", a, "smtp_port")):
        if getattr(obj, key) > 65535:
            raise bad(section, key, f"not a port: {getattr(obj, key)}")
    from shoal.hours import zone

    try:
        zone(settings.flow.tz)
    except ValueError as exc:
        raise bad("flow", "tz", str(exc)) from None
    if a.smtp_host and not a.smtp_to:
        raise bad("alerts", "smtp_to", "needs at least one address when smtp_host is set")
    if a.smtp_host and not a.smtp_from:
        raise bad("alerts", "smtp_from", "needs a sender address when smtp_host is set")
    if a.smtp_ssl and a.smtp_starttls and settings.source("alerts", "smtp_starttls") != "default":
        raise bad("alerts", "smtp_ssl", "choose smtp_ssl or smtp_starttls, not both")
    if a.webhook_url and urlsplit(a.webhook_url).scheme not in ("http", "https"):
        raise bad("alerts", "webhook_url", "must be an http(s) URL")
    if h.attempts < 1:
        raise bad("hooks", "attempts", "must be at least 1")
    if not (h.commands or h.kinds):
        return
    from connectors.ops.hooks import KINDS, check_template

    unknown = [k for k in h.kinds if k not in KINDS]
    if unknown:
        raise bad("hooks", "kinds", f"unknown kind {unknown[0]!r} (known: {', '.join(KINDS)})")
    for template in h.commands:
        try:
            check_template(template)
        except ValueError as exc:
            raise bad("hooks", "commands", str(exc)) from None


# --------------------------------------------------------------------------- printing


def _masked(key: str, fld: dataclasses.Field[Any], value: Any) -> Any:
    if not is_secret(key, fld) or value in ("", None, []):
        return value
    if fld.metadata.get("mask") == "url":
        parts = urlsplit(str(value))
        return f"{parts.scheme}://{parts.hostname or ''}/{MASK}"
    return MASK


def as_dict(settings: Settings, *, mask: bool = True) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        out[section] = {}
        for key, _typ, fld in options(section):
            value = settings.get(section, key)
            out[section][key] = _masked(key, fld, value) if mask else value
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return orjson.dumps(str(value)).decode()  # a JSON string is a valid TOML basic string


def format_toml(settings: Settings, *, mask: bool = True) -> str:
    """TOML that loads back (unset optional values are commented out), sources as comments."""
    lines = [f"# effective shoal configuration; file: {settings.file or '(none)'}"]
    values = as_dict(settings, mask=mask)
    for section in SECTIONS:
        lines.append("")
        lines.append(f"[{section}]")
        for key, value in values[section].items():
            src = settings.source(section, key)
            note = "" if src == "default" else f"  # {src}"
            if value is None:
                lines.append(f"# {key} = (unset){note}")
            else:
                lines.append(f"{key} = {_toml_value(value)}{note}")
    for name in settings.ignored_env:
        lines.append(f"# ignored: environment {name} names no option")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CLI glue

# argparse dest -> (section, key, inverted). Only values that came from the file or the
# environment become defaults; otherwise each command keeps its own default.
CLI_OPTIONS: dict[str, tuple[str, str, bool]] = {
    "brokers": ("kafka", "brokers", False),
    "partitions": ("kafka", "partitions", False),
    "data_dir": ("flow", "data_dir", False),
    "tz": ("flow", "tz", False),
    "partition_by": ("flow", "partition_by", False),
    "lateness": ("flow", "lateness", False),
    "idle_exit": ("flow", "idle_exit", False),
    "workers": ("flow", "workers", False),
    "seal_processes": ("flow", "seal_processes", False),
    "epoch_seconds": ("flow", "epoch_seconds", False),
    "log_level": ("flow", "log_level", False),
    "no_recovery": ("flow", "recovery", True),
    "no_media": ("media", "enabled", True),
    "collector": ("collectors", "name", False),
    "metrics_port": ("metrics", "port", False),
    "metrics_host": ("metrics", "host", False),
}


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                out.extend(_parsers(sub))
    return out


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)command ``--config PATH`` so it can stand anywhere on the line."""
    for p in _parsers(parser):
        if not any("--config" in a.option_strings for a in p._actions):
            p.add_argument("--config", default=argparse.SUPPRESS, metavar="PATH",
                           help=f"TOML configuration (default ${CONFIG_ENV} or ./{DEFAULT_FILE})")


def apply_defaults(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """File and environment values become argparse defaults: the command line still wins."""
    for p in _parsers(parser):
        for action in p._actions:
            spec = CLI_OPTIONS.get(action.dest)
            if spec is None:
                continue
            section, key, inverted = spec
            if settings.source(section, key) == "default":
                continue
            value = settings.get(section, key)
            if inverted:
                value = not value
            elif isinstance(value, str) and not value:
                continue
            action.default = value
            action.required = False


def config_path_in(argv: Sequence[str]) -> str | None:
    """The ``--config`` of a command line wherever it stands, before the full parse."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(list(argv))
    value: str | None = known.config
    return value


def prepare(parser: argparse.ArgumentParser, argv: Sequence[str],
            env: Mapping[str, str] | None = None) -> Settings:
    """Load the configuration the command line names and make it the parser's defaults."""
    settings = load(config_path_in(argv), env)
    add_config_option(parser)
    apply_defaults(parser, settings)
    return settings


# --------------------------------------------------------------------------- `shoal config`


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("config", help="inspect the configuration")
    sub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = sub.add_parser("check", help="print the effective configuration, secrets masked")
    c.add_argument("--config", default=argparse.SUPPRESS, metavar="PATH",
                   help=f"TOML configuration (default ${CONFIG_ENV} or ./{DEFAULT_FILE})")
    c.add_argument("--format", choices=("toml", "json"), default="toml")
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "format", "toml") == "json":
        doc: dict[str, Any] = {
            "file": str(settings.file) if settings.file else None,
            "settings": as_dict(settings),
            "sources": {k: v for k, v in settings.sources.items()},
            "ignored_env": settings.ignored_env,
        }
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(format_toml(settings))
    return 0
