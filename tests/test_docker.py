"""The deployment files, checked without a Docker engine: compose.yaml parsed with PyYAML and
its shoal commands parsed by shoal's real argument parser; `docker compose config` (or v1
`docker-compose config`, which need no engine) is run as well when installed."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.kafka.publisher import MAX_MESSAGE_BYTES
from shoal.app import config
from shoal.app.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
# Collector kinds another change registers; until then their commands are checked up to the kind.
PENDING_KINDS: set[str] = set()  # every collector kind of compose.yaml is registered
VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and ${VAR?error}."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        value = env.get(name)
        if op in (":-", "-"):
            use_default = not value if op == ":-" else value is None
            return arg if use_default else str(value)
        if op in (":?", "?") and (not value if op == ":?" else value is None):
            raise KeyError(f"{name}: {arg}")
        return value or ""

    return VAR.sub(sub, text)


ENV = {"TWITTER_BEARER_TOKEN": "dummy-token"}


def compose() -> dict[str, Any]:
    doc = yaml.safe_load(interpolate(COMPOSE.read_text(), ENV))
    assert isinstance(doc, dict)
    return doc


def shoal_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in doc["services"].items() if s.get("image", "").startswith("shoal")}


def parse_shoal(argv: list[str]) -> argparse.Namespace:
    """Parse with the real parser; argparse errors become an exception carrying the message."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return build_parser().parse_args(argv)
        except SystemExit:
            raise ValueError(err.getvalue().strip().splitlines()[-1]) from None


def check_command(argv: list[str]) -> argparse.Namespace:
    """Parse a shoal command; a collect kind not registered yet is checked with `file` in its
    place, so every other option is still verified against the real parser."""
    try:
        return parse_shoal(argv)
    except ValueError as exc:
        if argv[:1] != ["collect"] or "invalid choice" not in str(exc):
            raise
        assert argv[1] in PENDING_KINDS, f"unknown collector kind {argv[1]!r}: {exc}"
        return parse_shoal(["collect", "file", "placeholder.jsonl", *argv[2:]])


def test_services_images_restart_and_healthchecks() -> None:
    doc = compose()
    services = doc["services"]
    assert {"kafka", "processor"} <= set(services)
    collectors = [n for n in services if n.startswith("collector")]
    assert collectors, "at least one collector service"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    shoal = shoal_services(doc)
    assert set(shoal) == {"processor", *collectors}
    for name, svc in shoal.items():
        assert svc["restart"] == "always", name
        assert svc["stop_signal"] == "SIGINT", name
        build = svc["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT
        assert (context / build["dockerfile"]).is_file()
        assert "/healthz" in " ".join(svc["healthcheck"]["test"])
        assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert services["kafka"]["restart"] == "always"
    assert "kafka-broker-api-versions" in " ".join(services["kafka"]["healthcheck"]["test"])


def test_named_volumes_are_declared_and_used_where_data_lives() -> None:
    doc = compose()
    declared = set(doc["volumes"])
    used = set()
    mounts: dict[str, dict[str, str]] = {}
    for name, svc in doc["services"].items():
        for vol in svc.get("volumes", []):
            source, target = str(vol).split(":")[:2]
            mounts.setdefault(name, {})[target] = source
            if not source.startswith((".", "/")):
                used.add(source)
            else:
                assert (DOCKER / source).resolve().parent.is_dir()
    assert used == declared
    kafka_env = doc["services"]["kafka"]["environment"]
    assert mounts["kafka"][kafka_env["KAFKA_LOG_DIRS"]] in declared
    args = check_command(doc["services"]["processor"]["command"])
    assert mounts["processor"][str(args.data_dir)] in declared


def test_kafka_runs_in_kraft_mode_with_long_retention() -> None:
    env = {k: str(v) for k, v in compose()["services"]["kafka"]["environment"].items()}
    for key in ("KAFKA_PROCESS_ROLES", "KAFKA_NODE_ID", "KAFKA_CONTROLLER_QUORUM_VOTERS",
                "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS",
                "KAFKA_CONTROLLER_LISTENER_NAMES", "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                "CLUSTER_ID", "KAFKA_LOG_DIRS"):
        assert env.get(key), key
    assert not [k for k in env if "ZOOKEEPER" in k]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    listeners = dict(re.findall(r"(\w+)://[^:,]*:(\d+)", env["KAFKA_LISTENERS"]))
    protocol = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocol)
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    voter_id, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert voter_id == env["KAFKA_NODE_ID"]
    assert voter == f"kafka:{listeners[controller]}"
    advertised = dict(re.findall(r"(\w+)://([^,]+)", env["KAFKA_ADVERTISED_LISTENERS"]))
    assert controller not in advertised and set(advertised) <= set(listeners)
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert len(env["CLUSTER_ID"]) == 22
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert int(env["KAFKA_LOG_RETENTION_HOURS"]) >= 8760
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) > MAX_MESSAGE_BYTES
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"  # a single node

    # Every shoal service talks to an advertised listener.
    for svc in shoal_services(compose()).values():
        brokers = check_command(svc["command"]).brokers
        assert brokers in advertised.values(), brokers


def test_every_shoal_command_parses_with_the_real_parser() -> None:
    doc = compose()
    seen = {}
    for name, svc in shoal_services(doc).items():
        args = check_command(svc["command"])
        seen[name] = args.command
        if args.command == "collect":
            assert args.collector == "server-a"  # the default of SHOAL_COLLECTOR_NAME
            assert svc["environment"]["TWITTER_BEARER_TOKEN"] == "dummy-token"
        if args.command == "process":
            assert args.data_dir == Path("/data")
    assert sorted(seen.values()) == ["collect", "process"]
    with pytest.raises(ValueError, match="invalid choice"):
        check_command(["colect", "file", "x"])  # the checker itself can fail
    with pytest.raises(AssertionError, match="unknown collector kind"):
        check_command(["collect", "twiter-sample", "--brokers", "k:1", "--collector", "a"])


def test_referenced_variables_are_documented_and_shoal_variables_are_real_options() -> None:
    text = COMPOSE.read_text()
    referenced = {m.group(1) for m in VAR.finditer(text)}
    readme = (DOCKER / "README.md").read_text()
    example = (DOCKER / "env.example").read_text()
    for name in sorted(referenced):
        assert f"`{name}`" in readme, f"{name} not in docker/README.md"
        assert re.search(rf"^{name}=", example, re.M), f"{name} not in docker/env.example"
    with pytest.raises(KeyError, match="TWITTER_BEARER_TOKEN"):
        interpolate(text, {})  # required, with a message saying where to set it

    known = {config.CONFIG_ENV}
    for section in config.SECTIONS:
        for key, _typ, fld in config.options(section):
            known.add(config.env_name(section, key))
            known.update(fld.metadata.get("env_aliases", ()))
    dockerfile = (DOCKER / "Dockerfile").read_text()
    names = set(re.findall(r"\b(SHOAL_[A-Z_]+)=", dockerfile))
    for svc in shoal_services(compose()).values():
        names |= {n for n in svc["environment"] if n.startswith("SHOAL_")}
    systemd_env = (DOCKER / "systemd" / "shoal.env.example").read_text()
    names |= set(re.findall(r"^(SHOAL_[A-Z_]+)=", systemd_env, re.M))
    assert names and names <= known, names - known
    assert re.search(r"^TWITTER_BEARER_TOKEN=", systemd_env, re.M)


def test_dockerfile_builds_the_package_as_a_non_root_user() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["shoal"\]', text, re.M)
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    for src in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for item in src.split():
            assert (ROOT / item).exists(), item
            assert f"!{item}" in ignore or f"!{item}/**" in ignore, f"{item} ignored by build"


def _unit(path: Path) -> dict[str, list[str]]:
    """systemd keys may repeat (EnvironmentFile=), which configparser refuses."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def _expand(command: str, env: dict[str, str], instance: str) -> list[str]:
    """systemd's ${VAR} (one word) and $VAR (split on blanks), and %i."""
    words = []
    for word in shlex.split(command.replace("%i", instance)):
        if re.fullmatch(r"\$\w+", word):
            words.extend(env.get(word[1:], "").split())
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return words


@pytest.mark.parametrize("unit", ["shoal-processor.service", "shoal-collector@.service"])
def test_systemd_units_restart_and_run_parseable_commands(unit: str) -> None:
    keys = _unit(DOCKER / "systemd" / unit)
    assert keys["Restart"] == ["always"]
    assert "/etc/shoal/shoal.env" in keys["EnvironmentFile"]
    assert keys["KillSignal"] == ["SIGINT"]
    lines = (DOCKER / "systemd" / "shoal.env.example").read_text().splitlines()
    lines += keys.get("Environment", [])
    env = {}
    for line in lines:
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    (exec_start,) = keys["ExecStart"]
    argv = _expand(exec_start, env, "server-b")
    assert argv[0] == "/opt/shoal/venv/bin/shoal"
    args = check_command(argv[1:])
    assert args.brokers == "kafka.lab.example:9094"
    if args.command == "collect":
        assert args.collector == "server-b"
    else:
        assert str(args.data_dir).startswith(keys["ReadWritePaths"][0])


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30,
                               check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_agrees_when_the_tool_is_installed() -> None:
    """`config` only reads and interpolates the file: no engine needed. Without the tool the
    test still compares our interpolation with PyYAML's view of the raw file."""
    ours = compose()
    raw = yaml.safe_load(COMPOSE.read_text())
    assert set(raw["services"]) == set(ours["services"])
    assert raw["services"]["processor"]["command"] == ours["services"]["processor"]["command"]
    cli = _compose_cli()
    if cli is None:
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "SHOAL_"))}
    env.update(ENV)
    proc = subprocess.run([*cli, "-f", str(COMPOSE), "config"], capture_output=True, text=True,
                          timeout=60, env=env, cwd=DOCKER, check=False)
    assert proc.returncode == 0, proc.stderr
    theirs = yaml.safe_load(proc.stdout)
    assert set(theirs["services"]) == set(ours["services"])
    assert set(theirs["volumes"]) == set(ours["volumes"])
    for name, svc in shoal_services(ours).items():
        assert theirs["services"][name]["command"] == svc["command"]
        assert theirs["services"][name]["restart"] == "always"
    kafka = theirs["services"]["kafka"]["environment"]
    assert str(kafka["KAFKA_PROCESS_ROLES"]) == "broker,controller"
    assert str(kafka["KAFKA_LOG_RETENTION_HOURS"]) == "8760"


def test_cluster_override_makes_one_bytewax_cluster_over_one_data_volume() -> None:
    """compose.cluster.yaml over compose.yaml: processors that name each other and share DIR."""
    base = compose()
    override = yaml.safe_load(interpolate((DOCKER / "compose.cluster.yaml").read_text(), ENV))
    services = dict(base["services"])
    for name, svc in override["services"].items():  # compose merges a service key by key
        services[name] = {**services.get(name, {}), **svc}
    processors = {n: s for n, s in services.items()
                  if s.get("image", "").startswith("shoal") and s["command"][0] == "process"}
    assert len(processors) == 2
    parsed = {n: check_command(s["command"]) for n, s in processors.items()}
    addresses = {args.addresses for args in parsed.values()}
    assert len(addresses) == 1  # every process lists the same cluster
    members = addresses.pop().split(",")
    assert sorted(m.rsplit(":", 1)[0] for m in members) == sorted(processors)
    assert sorted(args.process_id for args in parsed.values()) == list(range(len(members)))
    for name, args in parsed.items():
        assert members[args.process_id].startswith(f"{name}:")  # its own index
        assert args.data_dir == Path("/data")
        assert "shoal-data:/data" in processors[name]["volumes"]
        assert processors[name]["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert processors[name]["restart"] == "always"
        assert processors[name]["stop_signal"] == "SIGINT"
    host_ports = [p.rsplit(":", 2)[-2] for s in services.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), host_ports
    for name in re.findall(r"\$\{(\w+)", (DOCKER / "compose.cluster.yaml").read_text()):
        assert f"`{name}`" in (DOCKER / "README.md").read_text()
