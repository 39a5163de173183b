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
import logging
import math
import os
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from shoal.errors import UserError
from shoal.fetch.policy import check_header_value, folder_prefix, host_limits, validate_template
from shoal.names import check_collector
from shoal.options import (
    FETCH,
    SECTIONS,
    Option,
    Settings,
    all_options,
    kind_of,
    options,
)
from shoal.templates import check_hook_template

__all__ = ["SECTIONS", "ConfigError", "Option", "Settings", "load", "options"]

ENV_PREFIX = "SHOAL_"
CONFIG_ENV = "SHOAL_CONFIG"
DEFAULT_FILE = "shoal.toml"
MASK = "***"
log = logging.getLogger("shoal.config")
SECRET_WORDS = frozenset({"token", "password", "secret", "key"})


class ConfigError(UserError):
    """An invalid file or value; its message is one line naming the file, section and key."""


# --------------------------------------------------------------------------- schema helpers


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section}_{key}".upper()


def is_secret(key: str, fld: dataclasses.Field[Any] | None = None) -> bool:
    """Named like a secret; the webhook URL is masked too, since chat webhooks embed tokens."""
    if fld is not None and fld.metadata.get("secret") is not None:
        return bool(fld.metadata["secret"])  # declared: "domain_key" is a choice, not a key
    if fld is not None and fld.metadata.get("mask"):
        return True
    return any(part in SECRET_WORDS for part in key.lower().split("_"))


def _shown(raw: Any, fld: dataclasses.Field[Any]) -> str:
    """A value as an error message may show it: a secret's value never, only its type.

    A token pasted into the wrong key, or unquoted in TOML, must not end up in a terminal's
    scrollback, a CI log or a bug report.
    """
    if is_secret(fld.name, fld):
        return f"a {type(raw).__name__} (value hidden: a secret)"
    return repr(raw)


def _coerce(raw: Any, typ: Any, fld: dataclasses.Field[Any], where: str, from_env: bool) -> Any:
    kind, optional = kind_of(typ)
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
            raise ConfigError(f"{where}: expected true or false, got {_shown(text, fld)}")
        if kind == "list":
            if text.startswith("["):
                try:
                    raw = orjson.loads(text)
                except orjson.JSONDecodeError:
                    raise ConfigError(f"{where}: not a JSON list: {_shown(text, fld)}") from None
            elif fld.metadata.get("split", True) is True:
                raw = [p.strip() for p in text.split(",") if p.strip()]
            elif fld.metadata.get("split") == " ":
                raw = text.split()
            else:
                raw = [text] if text else []
        elif kind in ("int", "float"):
            try:
                raw = int(text) if kind == "int" else float(text)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {_shown(text, fld)}") from None
        else:
            raw = text
    if raw is None and optional:
        return None
    if kind == "bool":
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: expected true or false, got {_shown(raw, fld)}")
        return raw
    if kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{where}: expected an integer, got {_shown(raw, fld)}")
        return raw
    if kind == "float":
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ConfigError(f"{where}: expected a number, got {_shown(raw, fld)}")
        return float(raw)
    if kind == "list":
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise ConfigError(f"{where}: expected a list of strings, got {_shown(raw, fld)}")
        return list(raw)
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: expected a string, got {_shown(raw, fld)}")
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


def validate(settings: Settings, command: str = "") -> None:
    """Cross-field and range checks; the first problem found is the error. ``command`` is
    the one about to run, for the checks that depend on it ("" when loading)."""
    where = str(settings.file) if settings.file else "configuration"

    def bad(section: str, key: str, why: str) -> ConfigError:
        src = settings.source(section, key)
        if src.startswith("flag "):
            return ConfigError(f"{src[5:]}: {why}")
        origin = f"environment {src[4:]}" if src.startswith("env ") else f"{where}: [{section}]"
        return ConfigError(f"{origin} {key}: {why}")

    for section in SECTIONS:
        for key, _typ, fld in options(section):
            value = settings.get(section, key)
            choices = fld.metadata.get("choices")
            if choices and isinstance(value, list):
                odd = [v for v in value if v not in choices]
                if odd:
                    raise bad(section, key,
                              f"unknown kind {_shown(odd[0], fld)} (known: {', '.join(choices)})")
            elif choices and value not in choices:
                raise bad(section, key, f"{_shown(value, fld)} is not one of {', '.join(choices)}")
            # NaN passes every comparison (--throttle nan turned throttling off) and inf
            # waits forever (--throttle inf hung the run): no option means either.
            if isinstance(value, float) and not math.isfinite(value):
                raise bad(section, key, f"must be a finite number, got {value}")
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
    if settings.collectors.name:
        try:
            check_collector(settings.collectors.name)
        except ValueError as exc:
            raise bad("collectors", "name", str(exc)) from None
    _validate_collectors(settings, bad)
    for template in h.commands:
        try:
            check_hook_template(template)
        except ValueError as exc:
            raise bad("hooks", "commands", str(exc)) from None
    _validate_media(settings, bad, command)


def _validate_collectors(settings: Settings, bad: Any) -> None:
    """The collectors' values a run would refuse later, refused now with their names."""
    from shoal.hours import parse_day

    c = settings.collectors
    days = {}
    for key in ("tiktok_since", "tiktok_until"):
        text = getattr(c, key)
        if text:
            try:
                days[key] = parse_day(text)
            except ValueError as exc:
                raise bad("collectors", key, str(exc)) from None
    if len(days) == 2 and days["tiktok_since"] > days["tiktok_until"]:
        raise bad("collectors", "tiktok_since", f"{c.tiktok_since} is after tiktok_until "
                  f"{c.tiktok_until}")
    if not 1 <= c.tiktok_page_size <= 100:
        raise bad("collectors", "tiktok_page_size", "must be 1 to 100 (the API's limit)")


def _validate_media(settings: Settings, bad: Any, command: str) -> None:
    """What the fetch engine would refuse, refused here with the option's name.

    ``{row.COLUMN}`` in the filename template names a column of ``shoal fetch``'s input: for
    that command any column passes here (it checks them against the input); elsewhere,
    including the configuration file that the dataflow reads, there is no input row.
    """
    media = settings.media
    if media.domain_parallelism < 1:
        raise bad("media", "domain_parallelism", "must be at least 1")
    # Checked by the engine as well, which only says "timeouts must be > 0" and only when
    # it is built: `config check` passed them, and a run with media off still failed.
    for key in ("connect_timeout", "read_timeout", "total_timeout"):
        if getattr(media, key) <= 0:
            raise bad("media", key, "must be more than 0 seconds")
    if media.max_bytes < 1:
        raise bad("media", "max_bytes", "must be at least 1")
    checks: list[tuple[str, Callable[[], object]]] = [
        ("host_limits", lambda: host_limits(media.host_limits)),
        ("folder_strategy", lambda: folder_prefix(media.folder_strategy)),
        ("user_agent", lambda: check_header_value(media.user_agent)),
    ]
    if media.filename_template:
        columns = None if command == FETCH else ()
        checks.append(("filename_template",
                       lambda: validate_template(media.filename_template, columns)))
    for key, check in checks:
        try:
            check()
        except ValueError as exc:
            raise bad("media", key, str(exc)) from None


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
#
# Every option's flag is made here from its declaration, on the commands the declaration
# names. Values from the file or the environment become the flags' defaults (so an explicit
# flag still wins and ``--help`` shows the effective value); after parsing, :func:`resolve`
# reads every flag back into one validated :class:`Settings`, which is what commands use.


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                out.extend(_parsers(sub))
    return out


def _comma_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def add_options(p: argparse.ArgumentParser, command: str) -> None:
    """Give ``p`` (the parser of ``command``) the flag of every option declared for it."""
    p.set_defaults(command_path=command)
    groups: dict[str, Any] = {}
    for o in all_options():
        if not o.on(command):
            continue
        group = groups.get(o.section)
        if group is None:
            group = groups[o.section] = p.add_argument_group(
                f"[{o.section}] (also settable in shoal.toml or as SHOAL_{o.section.upper()}_*)")
        default = o.default_on(command)
        help_text = o.meta["help"]
        if o.meta["invert"]:
            help_text = f"turn off: {help_text}"
        elif o.kind != "bool" and default not in (None, "", []):
            shown = ",".join(default) if isinstance(default, list) else default
            help_text = f"{help_text} (default: {shown})".replace("%", "%%")
        kw: dict[str, Any] = {"dest": o.dest, "help": help_text}
        if o.kind == "bool":
            kw["action"] = "store_true"
            kw["default"] = False
            if not o.meta["invert"] and default:
                kw["action"] = argparse.BooleanOptionalAction
                kw["default"] = default
        elif o.kind == "list":
            if o.meta["split"] is True:
                kw["type"] = _comma_list
                kw["default"] = default
                kw["metavar"] = o.meta["metavar"] or "A,B,..."
            else:
                kw["action"] = "append"
                kw["default"] = None
                kw["metavar"] = o.meta["metavar"]
        else:
            # (a float that is not finite is refused by validate(), naming the flag)
            kw["type"] = Path if o.meta["path"] else {"int": int, "float": float}.get(o.kind, str)
            kw["default"] = (None if o.meta["path"] and not default else default)
            kw["metavar"] = o.meta["metavar"]
            if o.meta["choices"]:
                kw["choices"] = o.meta["choices"]
        if o.required_on(command):
            kw["required"] = True
        group.add_argument(o.flag, **kw)
        if _secret_text(o):
            group.add_argument(f"{o.flag}-file", dest=f"{o.dest}_file", type=Path,
                               default=None, metavar="PATH",
                               help=f"read the value of {o.flag} from the first line of this "
                                    "file (unlike the flag, not visible in ps)")


def _secret_text(o: Option) -> bool:
    """A secret given as one string: it can come from a file (``--token-file``)."""
    return o.kind == "str" and is_secret(o.key, o.field) and not o.meta.get("mask")


def _read_secret_file(o: Option, path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{o.flag}-file: cannot read {path}: {why}") from None
    value = lines[0].strip() if lines else ""
    if not value:
        raise ConfigError(f"{o.flag}-file: {path} is empty")
    return value


_warned: set[str] = set()


def secret_flags(settings: Settings) -> list[str]:
    """The flags through which a secret was given on this command line."""
    return [o.flag for o in all_options()
            if is_secret(o.key, o.field) and settings.source(o.section, o.key) == f"flag {o.flag}"]


def warn_secret_flags(settings: Settings) -> None:
    """Log once per flag that a secret was passed as an argument, never the value: every
    user of the machine can read a command line (``ps``, ``/proc/PID/cmdline``)."""
    for flag in secret_flags(settings):
        if flag in _warned:
            continue
        _warned.add(flag)
        o = next(o for o in all_options() if o.flag == flag)
        names = [env_name(o.section, o.key), *o.meta.get("env_aliases", ())]
        instead = " or ".join(names) + (f", or {flag}-file" if _secret_text(o) else "")
        log.warning("secret given on the command line", extra={"fields": {
            "flag": flag, "why": "every user of this machine can read it with ps",
            "instead": instead}})


def _option_of(dest: str, command: str | None) -> Option | None:
    """The option behind a flag of ``command``: two commands may spell different options
    the same way (each command's flags are unique, which tests/test_options.py checks)."""
    for o in all_options():
        if o.dest == dest and command is not None and o.on(command):
            return o
    return None


def env_text(value: Any) -> str:
    """A resolved value as ``_apply_env`` reads it back: lists as JSON (their items may hold
    commas), booleans as true/false, no value as an empty string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return orjson.dumps(value).decode()
    return str(value)


def child_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a shoal command this one starts (``up`` runs its live collectors as
    ``shoal collect NAME``): ours, plus every setting we took from our own command line.

    The child reads the same configuration file and inherits the environment, but not our
    flags: ``up --topic T`` had its collectors publish to the default topic while the
    dataflow read T, and sealed nothing. Flags become ``SHOAL_*`` variables, which beat the
    file as the flag did. The metrics port stays ours: a child binding it too died on
    "address already in use".
    """
    env = dict(os.environ if base is None else base)
    for o in all_options():
        if settings.source(o.section, o.key).startswith("flag"):
            env[env_name(o.section, o.key)] = env_text(settings.get(o.section, o.key))
    env[env_name("metrics", "port")] = "0"
    return env


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)command ``--config PATH`` so it can stand anywhere on the line."""
    for p in _parsers(parser):
        if not any("--config" in a.option_strings for a in p._actions):
            p.add_argument("--config", default=argparse.SUPPRESS, metavar="PATH",
                           help=f"TOML configuration (default ${CONFIG_ENV} or ./{DEFAULT_FILE})")


def apply_defaults(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """File and environment values become argparse defaults: the command line still wins."""
    for p in _parsers(parser):
        command = p.get_default("command_path")
        for action in p._actions:
            o = _option_of(action.dest, command)
            if o is None or settings.source(o.section, o.key) == "default":
                continue
            if isinstance(action, argparse._AppendAction):
                # argparse appends to a default list: `--hook X` ran the file's hooks and X.
                # Left unset, :func:`resolve` keeps the file's list when the flag is absent.
                continue
            value = settings.get(o.section, o.key)
            if o.meta["invert"]:
                value = not value
            elif o.meta["path"]:
                value = Path(value) if value else None
            # An empty string stays one: skipping it let the declared default come back
            # (`user_agent = ""` sent shoal's User-Agent, credited to a flag never given).
            action.default = value
            action.required = False


def resolve(args: argparse.Namespace, settings: Settings) -> Settings:
    """The settings a command runs with: its flags read back over file, environment and
    defaults, validated as a whole (a bad flag is one line naming the flag)."""
    command = getattr(args, "command_path", "")
    out = dataclasses.replace(settings, sources=dict(settings.sources))
    for section in SECTIONS:
        setattr(out, section, dataclasses.replace(getattr(settings, section)))
    for o in all_options():
        if not o.on(command) or not hasattr(args, o.dest):
            continue
        value = getattr(args, o.dest)
        if o.meta["invert"]:
            value = not value
        elif o.kind == "list":
            if value is None:  # a repeatable flag not given (see apply_defaults)
                continue
            value = list(value)
        elif o.meta["path"]:
            value = "" if value is None else str(value)
        if o.required_on(command) and value in ("", None):
            raise ConfigError(f"{o.flag} needs a value")
        from_file = getattr(args, f"{o.dest}_file", None) if _secret_text(o) else None
        if from_file is not None:
            if value != settings.get(o.section, o.key):
                raise ConfigError(f"give {o.flag} or {o.flag}-file, not both")
            value = _read_secret_file(o, Path(from_file))
            out.sources[f"{o.section}.{o.key}"] = f"flag {o.flag}-file"
        if value != settings.get(o.section, o.key):
            setattr(getattr(out, o.section), o.key, value)
            if from_file is None:
                out.sources[f"{o.section}.{o.key}"] = f"flag {o.flag}"
    validate(out, command)
    return out


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
