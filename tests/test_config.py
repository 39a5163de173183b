"""Configuration: file, environment and command line in that order of strength, secrets masked,
one clear line for a bad file; exercised through shoal's real argument parser."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from shoal.app import config
from shoal.app.cli import build_parser

EXAMPLE = Path(__file__).resolve().parents[1] / "docker" / "shoal.example.toml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shoal.toml"
    path.write_text(text)
    return path


def _check(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="shoal")
    config.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["config", "check", *argv])
    code: int = args.func(args)
    return code


def test_precedence_cli_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, '[kafka]\nbrokers = "file:1"\npartitions = 8\n'
                            '[flow]\ndata_dir = "/srv/shoal"\nlateness = 60\n'
                            '[media]\nenabled = false\n')
    env = {"SHOAL_KAFKA_BROKERS": "env:2", "SHOAL_FLOW_LATENESS": "90.5"}

    def parse(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
        parser = build_parser()
        config.prepare(parser, argv, env)
        return parser.parse_args(argv)

    args = parse(["process", "--config", str(path)], env)
    assert args.brokers == "env:2"  # env beats file
    assert args.partitions == 8  # file beats the command's default
    assert args.data_dir == Path("/srv/shoal")  # a required flag filled in by the file
    assert args.lateness == 90.5
    assert args.no_media is True  # inverted flag follows [media] enabled = false
    assert args.tz == "UTC" and args.epoch_seconds == 2.0  # untouched defaults

    args = parse(["process", "--brokers", "cli:3", "--lateness", "5", "--config", str(path)], env)
    assert (args.brokers, args.lateness) == ("cli:3", 5.0)  # the command line beats everything

    # $SHOAL_CONFIG names the file when --config does not.
    args = parse(["process"], {"SHOAL_CONFIG": str(path)})
    assert args.brokers == "file:1"

    # Nothing configured: required flags stay required, commands keep their own defaults.
    with pytest.raises(SystemExit):
        parse(["process"], {})
    up = parse(["up", "--data-dir", str(tmp_path)], {})
    assert up.collector == "file" and up.partitions == 4


def test_default_file_in_the_working_directory(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config.load(env={}).file is None
    _write(tmp_path, '[flow]\ntz = "Europe/Berlin"\n')
    settings = config.load(env={})
    assert settings.file == Path("shoal.toml") and settings.flow.tz == "Europe/Berlin"
    assert settings.source("flow", "tz") == "file"
    assert settings.source("flow", "lateness") == "default"


def test_environment_values_are_typed() -> None:
    s = config.load(env={
        "SHOAL_ALERTS_SMTP_TO": "a@x.org, b@x.org",
        "SHOAL_HOOKS_COMMANDS": '["rsync {path} backup:/s/{day}/", "echo {name}"]',
        "SHOAL_ALERTS_SMTP_STARTTLS": "off",
        "SHOAL_FLOW_IDLE_EXIT": "30",
        "SHOAL_METRICS_SEAL_STALE_SECONDS": "none",
        "SHOAL_METRICS_PORT": "9108",
        "SHOAL_ALERTS_SMTP_HOST": "",  # empty: as if unset
        "SHOAL_KAFKA_NOPE": "x",
    }, search=False)
    assert s.alerts.smtp_to == ["a@x.org", "b@x.org"]
    assert s.hooks.commands == ["rsync {path} backup:/s/{day}/", "echo {name}"]
    assert s.alerts.smtp_starttls is False
    assert s.flow.idle_exit == 30.0 and s.metrics.seal_stale_seconds is None
    assert s.metrics.port == 9108 and s.alerts.smtp_host == ""
    assert s.ignored_env == ["SHOAL_KAFKA_NOPE"]
    # A non-secret alias: the collectors read TWITTER_BEARER_TOKEN, the SHOAL_ name wins.
    both = {"TWITTER_BEARER_TOKEN": "a", "SHOAL_COLLECTORS_TWITTER_BEARER_TOKEN": "b"}
    assert config.load(env=both, search=False).collectors.twitter_bearer_token == "b"

    for env, message in [
        ({"SHOAL_KAFKA_PARTITIONS": "four"},
         "environment SHOAL_KAFKA_PARTITIONS: expected a number"),
        ({"SHOAL_MEDIA_ENABLED": "maybe"}, "expected true or false"),
        ({"SHOAL_FLOW_TZ": "Mars/Olympus"}, "environment SHOAL_FLOW_TZ tz:"),
        ({"SHOAL_HOOKS_COMMANDS": "{path} x"}, "first word"),
        ({"SHOAL_ALERTS_SMTP_HOST": "mail"}, "smtp_to: needs at least one address"),
    ]:
        with pytest.raises(config.ConfigError, match=re.escape(message)):
            config.load(env=env, search=False)


@pytest.mark.parametrize(("text", "message"), [
    ("[kafka\nbrokers = 1", "invalid TOML"),
    ('[kafka]\nbrokrs = "x"', "unknown key 'brokrs' in [kafka] (known: brokers,"),
    ("[kafak]\n", "unknown section [kafak]"),
    ('[kafka]\npartitions = "4"', "[kafka] partitions: expected an integer, got '4'"),
    ("[flow]\nlateness = true", "[flow] lateness: expected a number"),
    ('[flow]\npartition_by = "posted"', "'posted' is not one of created, retrieved"),
    ("[alerts]\nsmtp_port = 70000", "[alerts] smtp_port: not a port"),
    ('[hooks]\ncommands = ["rsync {file} b:"]', "unknown field {file}"),
    ('[hooks]\nkinds = ["tweet"]', "unknown kind 'tweet'"),
    ("[metrics]\nport = -1", "must not be negative"),
])
def test_invalid_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             text: str, message: str) -> None:
    path = _write(tmp_path, text)
    assert _check(["--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"shoal: error: {path}: ")
    assert message in err


def test_missing_explicit_file_is_an_error(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert _check(["--config", str(tmp_path / "nope.toml")]) == 2
    assert "no such config file" in capsys.readouterr().err


def test_check_prints_effective_values_with_secrets_masked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, '[alerts]\nsmtp_host = "mail.lab.example"\nsmtp_from = "s@lab"\n'
                            'smtp_to = ["ops@lab"]\nsmtp_user = "shoal"\n'
                            'smtp_password = "hunter2-file"\n')
    monkeypatch.setenv("SHOAL_ALERTS_SMTP_PASSWORD", "hunter2-env")
    monkeypatch.setenv("SHOAL_ALERTS_WEBHOOK_URL", "https://hooks.example.org/T000/B000/XyZsecret")
    monkeypatch.setenv("TWITTER_BEARER_TOKEN", "AAAAtoken")
    monkeypatch.setenv("SHOAL_KAFKA_BROKERS", "kafka:9092")
    assert _check(["--config", str(path)]) == 0
    out = capsys.readouterr().out
    for secret in ("hunter2", "XyZsecret", "T000", "AAAAtoken"):
        assert secret not in out
    assert 'smtp_password = "***"  # env SHOAL_ALERTS_SMTP_PASSWORD' in out
    assert 'webhook_url = "https://hooks.example.org/***"' in out
    assert 'twitter_bearer_token = "***"  # env TWITTER_BEARER_TOKEN' in out
    assert 'smtp_user = "shoal"  # file' in out  # a login name is not a secret
    assert 'brokers = "kafka:9092"  # env SHOAL_KAFKA_BROKERS' in out
    printed = tomllib.loads(out)  # TOML-like is real TOML
    assert printed["kafka"]["partitions"] == 4 and printed["alerts"]["smtp_to"] == ["ops@lab"]
    assert "idle_exit" not in printed["flow"]  # unset optional: commented out

    assert _check(["--config", str(path), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["alerts"]["smtp_password"] == "***"
    assert doc["sources"]["alerts.smtp_host"] == "file"
    assert "hunter2" not in json.dumps(doc)


def test_unmasked_output_loads_back_to_the_same_settings(tmp_path: Path) -> None:
    path = _write(tmp_path, '[hooks]\ncommands = ["osf -p abc upload {path} \\"{day}/{name}\\""]\n'
                            '[flow]\nidle_exit = 12.5\ntz = "Europe/Berlin"\n')
    first = config.load(path, env={})
    again = config.load(_write(tmp_path, config.format_toml(first, mask=False)), env={})
    assert config.as_dict(again, mask=False) == config.as_dict(first, mask=False)


def test_example_file_documents_every_option_and_loads() -> None:
    text = EXAMPLE.read_text()
    sections = re.split(r"^\[(\w+)\]$", text, flags=re.M)
    by_section = dict(zip(sections[1::2], sections[2::2], strict=True))
    assert list(by_section) == list(config.SECTIONS)
    for section in config.SECTIONS:
        for key, _typ, _fld in config.options(section):
            assert re.search(rf"^#? ?{key} = ", by_section[section], re.M), f"[{section}] {key}"
    settings = config.load(EXAMPLE, env={})
    defaults = config.Settings()
    assert config.as_dict(settings, mask=False) == config.as_dict(defaults, mask=False)


@pytest.mark.parametrize("value", ["8675309123", '["sk-live-8675309"]',
                                   '{ t = "sk-live-8675309" }', "true"])
def test_a_secret_of_the_wrong_type_is_not_echoed(tmp_path: Path, value: str) -> None:
    """The error names the file, the key and the type, never the value (the real CLI)."""
    path = tmp_path / "shoal.toml"
    path.write_text(f"[collectors]\nmastodon_token = {value}\n")
    proc = subprocess.run([sys.executable, "-m", "shoal", "config", "check", "--config",
                           str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("shoal: error: ") and "[collectors] mastodon_token" in line
    assert "value hidden" in line
    assert "8675309" not in proc.stderr + proc.stdout and "true" not in line.split("got")[1]


def test_secret_from_a_file_flag(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("tok-from-file\nignored second line\n")
    args = build_parser().parse_args(["collect", "mastodon", "h", "--brokers", "b",
                                      "--collector", "c", "--token-file", str(secret)])
    settings = config.resolve(args, config.load(env={}, search=False))
    assert settings.collectors.mastodon_token == "tok-from-file"
    assert config.secret_flags(settings) == []  # not on the command line: no warning
    args = build_parser().parse_args(["collect", "mastodon", "h", "--brokers", "b",
                                      "--collector", "c", "--token", "t"])
    assert config.secret_flags(config.resolve(args, config.load(env={}, search=False))) == [
        "--token"]
    both = build_parser().parse_args(["collect", "mastodon", "h", "--brokers", "b",
                                      "--collector", "c", "--token", "t", "--token-file",
                                      str(secret)])
    with pytest.raises(config.ConfigError, match="not both"):
        config.resolve(both, config.load(env={}, search=False))
    (tmp_path / "empty").write_text("\n")
    empty = build_parser().parse_args(["collect", "mastodon", "h", "--brokers", "b",
                                       "--collector", "c", "--token-file",
                                       str(tmp_path / "empty")])
    with pytest.raises(config.ConfigError, match=r"--token-file: .* is empty"):
        config.resolve(empty, config.load(env={}, search=False))


def test_a_name_like_a_secret_is_not_one_when_declared_so() -> None:
    """``domain_key`` ends in ``_key`` but is a choice: printed as is, no file twin, no
    warning; the real secrets around it still are secrets."""
    args = build_parser().parse_args(["process", "--brokers", "b", "--data-dir", "/tmp/d",
                                      "--domain-key", "domain", "--alerts-smtp-password", "pw"])
    settings = config.resolve(args, config.load(env={}, search=False))
    assert config.as_dict(settings)["media"]["domain_key"] == "domain"
    assert config.as_dict(settings)["alerts"]["smtp_password"] == config.MASK
    assert config.secret_flags(settings) == ["--alerts-smtp-password"]
    assert not hasattr(args, "domain_key_file") and hasattr(args, "alerts_smtp_password_file")


def test_settings_from_the_command_line_reach_a_child_through_its_environment() -> None:
    """child_env writes what our flags set so that the child's loader reads back the same
    values, commas inside list items and booleans included; the metrics port stays ours."""
    settings = config.load(None, env={}, search=False)
    settings.kafka.topic = "lab, posts"
    settings.kafka.deadletter_topic = False
    settings.kafka.max_message_bytes = 3_000_000
    settings.media.host_limits = ["pbs.twimg.com=8,0", "a.test=1,2.5"]
    settings.metrics.port = 9108
    for key in ("kafka.topic", "kafka.deadletter_topic", "kafka.max_message_bytes",
                "media.host_limits", "metrics.port"):
        settings.sources[key] = "flag --x"
    env = config.child_env(settings, base={"SHOAL_FLOW_LATENESS": "60"})
    child = config.load(None, env=env, search=False)
    assert child.kafka.topic == "lab, posts"
    assert child.kafka.deadletter_topic is False
    assert child.kafka.max_message_bytes == 3_000_000
    assert child.media.host_limits == ["pbs.twimg.com=8,0", "a.test=1,2.5"]
    assert child.flow.lateness == 60  # the inherited environment stays
    assert child.metrics.port == 0
    assert child.flow.log_level == "info"  # not given as a flag: not written
    assert "SHOAL_FLOW_LOG_LEVEL" not in env


@pytest.mark.parametrize("how", ["file", "env", "flag"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_number_that_is_not_finite_is_one_line_wherever_it_is_given(
        tmp_path: Path, how: str, value: str) -> None:
    """`float` reads nan and inf: a nan throttle turned politeness off, an inf lateness
    crashed the stage and an inf timeout failed every URL with an OverflowError."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    argv = [sys.executable, "-m", "shoal", "up", "--source", "demo:10", "--data-dir",
            str(tmp_path / "d"), "--idle-exit", "1"]
    if how == "file":
        argv += ["--config", str(_write(tmp_path, f"[media]\nthrottle = {value}\n"))]
    elif how == "env":
        env["SHOAL_MEDIA_THROTTLE"] = value
    else:
        argv += [f"--throttle={value}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert "finite" in line and "throttle" in line.lower(), line
    assert not (tmp_path / "d").exists()


def test_a_repeatable_flag_replaces_the_files_list_and_an_empty_string_stays_empty(
        tmp_path: Path) -> None:
    """flag > environment > file holds for lists too (argparse appended `--hook X` to the
    file's hooks, and `--host-limit` to its limits), and a text setting the file empties
    stays empty (the declared default came back, credited to a flag never given)."""
    path = _write(tmp_path, '[hooks]\ncommands = ["echo file {path}"]\n'
                            '[media]\nhost_limits = ["a.test=1,1"]\nuser_agent = ""\n')

    def resolved(argv: list[str], env: dict[str, str]) -> config.Settings:
        parser = build_parser()
        settings = config.prepare(parser, argv, env)
        return config.resolve(parser.parse_args(argv), settings)

    base = ["up", "--data-dir", str(tmp_path / "d"), "--config", str(path)]
    kept = resolved(base, {})
    assert kept.hooks.commands == ["echo file {path}"]
    assert kept.media.host_limits == ["a.test=1,1"]
    assert kept.media.user_agent == "" and kept.source("media", "user_agent") == "file"
    given = resolved([*base, "--hook", "echo flag {path}", "--host-limit", "b.test=2,0",
                      "--host-limit", "c.test=3,0"], {})
    assert given.hooks.commands == ["echo flag {path}"]
    assert given.media.host_limits == ["b.test=2,0", "c.test=3,0"]
    from_env = resolved(base, {"SHOAL_MEDIA_HOST_LIMITS": '["e.test=4,0"]'})
    assert from_env.media.host_limits == ["e.test=4,0"]
    fetch = resolved(["fetch", "u", "-i", str(path), "--config", str(path),
                      "--host-limit", "f.test=1,0"], {})
    assert fetch.media.host_limits == ["f.test=1,0"]


def test_host_limits_in_the_environment_take_the_form_the_flag_takes() -> None:
    """`HOST=P,T` holds a comma: split on commas, the documented form was refused."""
    one = config.load(None, env={"SHOAL_MEDIA_HOST_LIMITS": "pbs.twimg.com=8,0"}, search=False)
    assert one.media.host_limits == ["pbs.twimg.com=8,0"]
    two = config.load(None, env={"SHOAL_MEDIA_HOST_LIMITS": " a.test=1,1  b.test=2,0.5 "},
                      search=False)
    assert two.media.host_limits == ["a.test=1,1", "b.test=2,0.5"]
    kinds = config.load(None, env={"SHOAL_MEDIA_MEDIA_TYPES": "photo,video"}, search=False)
    assert kinds.media.media_types == ["photo", "video"]  # other lists still split on commas


@pytest.mark.parametrize("argv", [["report", "day", "2021-05-11"], ["report", "hashtags"],
                                  ["report", "images"], ["serve"], ["query", "SELECT 1"]])
def test_every_reader_of_a_data_dir_takes_it_from_the_file_or_the_environment(
        tmp_path: Path, argv: list[str]) -> None:
    """`shoal query` took `[flow] data_dir` and `SHOAL_FLOW_DATA_DIR`; report and serve
    said "--data-dir required"."""
    parser = build_parser()
    config.prepare(parser, argv, {"SHOAL_FLOW_DATA_DIR": str(tmp_path / "env")})
    assert parser.parse_args(argv).data_dir == tmp_path / "env"
    path = _write(tmp_path, f'[flow]\ndata_dir = "{tmp_path / "file"}"\n')
    parser = build_parser()
    config.prepare(parser, [*argv, "--config", str(path)], {})
    assert parser.parse_args([*argv, "--config", str(path)]).data_dir == tmp_path / "file"
    parser = build_parser()
    config.prepare(parser, argv, {})
    with pytest.raises(SystemExit):  # still required when nothing gives it
        parser.parse_args(argv)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("SHOAL_MEDIA_TOTAL_TIMEOUT", "0", "total_timeout"),
    ("SHOAL_MEDIA_CONNECT_TIMEOUT", "0", "connect_timeout"),
    ("SHOAL_MEDIA_MAX_BYTES", "0", "max_bytes"),
    ("SHOAL_MEDIA_HOST_LIMITS", "a.test=0,1", "P must be at least 1"),
    ("SHOAL_MEDIA_HOST_LIMITS", "=2,1", "no host"),
])
def test_what_the_fetch_engine_refuses_is_refused_by_config_check(
        key: str, value: str, message: str) -> None:
    """`config check` passed values every run then refused, with a message naming no key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    proc = subprocess.run([sys.executable, "-m", "shoal", "config", "check"],
                          env={**env, key: value}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout[-500:]
    (line,) = proc.stderr.strip().splitlines()
    assert message in line and key in line, line
