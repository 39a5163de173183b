"""One declaration per option: every option of every section, set through the file, through the
environment and through its flag, arrives where it acts; the throttle is judged by a server.

Wave 1 parsed ``[media]`` and then ignored it. These tests walk the schema itself
(``shoal.options``), so an option added later is covered without touching them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.publisher import ensure_topics
from shoal.app import config
from shoal.app.cli import _flow_config, build_parser
from shoal.demo import DemoSpec, write_demo_files
from shoal.fetch.policy import FLOW_MEDIA_KEYS, FetchConfig, FetchResult
from shoal.model import FETCH_COLUMNS
from shoal.options import Option, all_options
from tests.loopback_server import MediaServer, tightest_window
from tests.pipeline import publish

# A valid value other than the default, per option; the rest are made from the type.
SPECIAL: dict[str, Any] = {
    "flow.tz": "Europe/Berlin",
    "flow.partition_by": "retrieved",
    "flow.log_level": "debug",
    "flow.data_dir": "/srv/shoal-data",
    "flow.recovery_dir": "/srv/shoal-recovery",
    "media.domain_key": "domain",
    "media.media_types": ["photo", "gif"],
    "media.host_limits": ["a.test=3,0.5", "b.test=1,2"],
    "media.folder_strategy": "prefix-2",
    "media.filename_template": "{platform}/{post_id}_{position}.{ext}",
    "alerts.webhook_url": "https://hooks.example.org/x",
    "alerts.smtp_to": ["a@lab.example", "b@lab.example"],
    "alerts.expect_collectors": ["server-a", "server-b"],
    "hooks.commands": ["echo {path}", "rsync {path} b:/x/{day}/"],
    "hooks.kinds": ["IDs", "report"],
    "metrics.port": 9109,
    "alerts.smtp_port": 2525,
    "collectors.tiktok_since": "2024-01-01",
    "collectors.tiktok_until": "2024-02-14",
    "collectors.tiktok_page_size": 50,
    "collectors.images_proxy": "socks5://127.0.0.1:1080",
}
# Values that only make sense with others (checked together by the configuration).
WITH: dict[str, dict[str, Any]] = {
    "alerts.smtp_host": {"smtp_from": "s@lab.example", "smtp_to": ["o@lab.example"]},
}
# What each command needs besides the option under test.
BASE_ARGV: dict[str, list[str]] = {
    "up": ["--data-dir", "/tmp/d"],
    "process": ["--brokers", "k:1", "--data-dir", "/tmp/d"],
    "replay": ["--brokers", "k:1", "--data-dir", "/tmp/d"],
    "query": ["--data-dir", "/tmp/d", "SELECT 1"],
    "fetch": ["url", "-i", "x.csv"],
    "collect file": ["x.jsonl", "--brokers", "k:1", "--collector", "c"],
    "collect twitter-sample": ["--brokers", "k:1", "--collector", "c"],
    "collect twitter-search": ["q", "--brokers", "k:1", "--collector", "c"],
    "collect tiktok": ["--hashtags", "x", "--brokers", "k:1", "--collector", "c"],
    "collect mastodon": ["mastodon.example", "--brokers", "k:1", "--collector", "c"],
    "collect instagram": ["--profiles", "x", "--brokers", "k:1", "--collector", "c"],
    "collect images": ["kw", "--brokers", "k:1", "--collector", "c"],
}


def value_for(o: Option) -> Any:
    name = f"{o.section}.{o.key}"
    if name in SPECIAL:
        return SPECIAL[name]
    default = o.default()
    if o.meta["choices"]:
        return next(c for c in o.meta["choices"] if c != default)
    if o.kind == "bool":
        return not default
    if o.kind == "int":
        return (default or 0) + 3
    if o.kind == "float":
        return (default or 0.0) + 1.5
    if o.kind == "list":
        return ["one", "two"]
    return f"{o.key}-value"


def command_of(o: Option) -> str:
    first: str = o.meta["commands"][0]
    return "collect file" if first == "collect" else first


def argv_for(command: str, extra: list[str]) -> list[str]:
    base = list(BASE_ARGV[command])
    words = command.split()
    # Flags the test passes win over the base ones (argparse keeps the last).
    return [*words, *base, *extra]


def flag_argv(o: Option, value: Any) -> list[str]:
    if o.kind == "bool":
        if o.meta["invert"]:
            return [o.flag] if not value else []
        return [o.flag] if value else [f"--no-{o.flag[2:]}"]
    if o.kind == "list":
        if o.meta["split"] and o.flag != "--host-limit":
            return [o.flag, ",".join(value)]
        return [a for v in value for a in (o.flag, v)]
    return [o.flag, str(value)]


def env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return orjson.dumps(value).decode()
    return str(value)


def toml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_text(v) for v in value) + "]"
    return orjson.dumps(value).decode()


def parse_with(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
    """What ``shoal.app.cli.main`` does before running a command."""
    parser = build_parser()
    settings = config.prepare(parser, argv, env)
    args = parser.parse_args(argv)
    args.settings = config.resolve(args, settings)
    return args


def where_it_acts(o: Option, args: argparse.Namespace) -> list[Any]:
    """The value as each consumer of the option sees it."""
    settings = args.settings
    seen = [settings.get(o.section, o.key)]
    if o.section in ("flow", "media") and args.command in ("up", "process", "replay"):
        cfg = _flow_config(args, "k:1")
        seen.append(getattr(getattr(cfg, o.section), o.key))
        if o.section == "media" and o.key not in FLOW_MEDIA_KEYS:
            engine = getattr(cfg.fetch, o.key)
            seen.append(engine if engine is not None else "")
        if o.key == "host_limits":
            assert cfg.fetch is not None
            seen.append([f"{h}={p},{t:g}" for h, (p, t) in cfg.fetch.per_host.items()])
    if o.section == "kafka" and o.key in ("topic", "deadletter_topic") and \
            args.command in ("up", "process", "replay"):
        seen.append(getattr(_flow_config(args, "k:1"), o.key))
    return seen


OPTIONS = all_options()


@pytest.mark.parametrize("channel", ["file", "env", "flag"])
@pytest.mark.parametrize("o", OPTIONS, ids=[f"{o.section}.{o.key}" for o in OPTIONS])
def test_every_option_arrives_where_it_acts(o: Option, channel: str, tmp_path: Path) -> None:
    assert o.meta["commands"], f"{o.section}.{o.key} is declared for no command"
    value = value_for(o)
    assert value != o.default(), "the test value must differ from the default"
    extras = WITH.get(f"{o.section}.{o.key}", {})
    command = command_of(o)
    env: dict[str, str] = {}
    extra_argv: list[str] = []
    if channel == "file":
        lines = [f"[{o.section}]", f"{o.key} = {toml_text(value)}"]
        lines += [f"{k} = {toml_text(v)}" for k, v in extras.items()]
        path = tmp_path / "shoal.toml"
        path.write_text("\n".join(lines) + "\n")
        extra_argv = ["--config", str(path)]
    elif channel == "env":
        env[config.env_name(o.section, o.key)] = env_text(value)
        env.update({config.env_name(o.section, k): env_text(v) for k, v in extras.items()})
    else:
        extra_argv = flag_argv(o, value)
        by_key = {x.key: x for x in OPTIONS if x.section == o.section}
        for k, v in extras.items():
            extra_argv += flag_argv(by_key[k], v)
    if channel != "flag" and o.required_on(command):
        # The base command line would win over the file and the environment.
        base = BASE_ARGV[command]
        i = base.index(o.flag)
        argv = [*command.split(), *base[:i], *base[i + 2:], *extra_argv]
    else:
        argv = argv_for(command, extra_argv)
    args = parse_with(argv, env)
    source = args.settings.source(o.section, o.key)
    assert source.split()[0] == channel, (source, channel)
    for seen in where_it_acts(o, args):
        assert seen == value


def test_flags_are_unique_per_command() -> None:
    commands = {c for o in OPTIONS for c in o.meta["commands"]}
    for command in commands:
        on = [o for o in OPTIONS if o.on(command)]
        assert len({o.flag for o in on}) == len(on), command
        assert len({o.dest for o in on}) == len(on), command


def test_the_engine_takes_every_media_option_by_name() -> None:
    engine = {f.name for f in dataclasses.fields(FetchConfig)}
    for o in OPTIONS:
        if o.section == "media" and o.key not in FLOW_MEDIA_KEYS:
            assert o.key in engine, f"[media] {o.key} reaches no FetchConfig field"


def test_fetched_cells_are_the_declared_columns() -> None:
    assert tuple(FetchResult(url="x").media_cells()) == FETCH_COLUMNS


@pytest.mark.parametrize(("argv", "message"), [
    (["--throttle", "-1"], "--throttle: must not be negative"),
    (["--media-types", "photo,sticker"], "--media-types: unknown kind 'sticker'"),
    (["--host-limit", "x.test=fast"], "--host-limit: bad host limit"),
    (["--folder-strategy", "weird"], "--folder-strategy: unknown folder strategy"),
    (["--tz", "Mars/Olympus"], "--tz:"),
])
def test_a_bad_flag_is_one_line_naming_it(argv: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from shoal.app.cli import main

    assert main(["process", "--brokers", "k:1", "--data-dir", "/tmp/x", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


# --------------------------------------------------------------------------- the throttle


@pytest.fixture(scope="module")
def demo_topic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, MediaServer]]:
    """A topic of posts whose media all live on one loopback host."""
    folder = tmp_path_factory.mktemp("demo")
    server = MediaServer(latency=0.0).start()
    with EmbeddedBroker() as broker:
        spec = DemoSpec(posts=12, hours=1, seed=3, media_share=1.0,
                        photo_base=f"http://127.0.0.1:{server.port}",
                        video_base=f"http://127.0.0.1:{server.port}")
        ensure_topics(broker.bootstrap, 1)
        publish(broker.bootstrap, list(write_demo_files(folder, spec).items()))
        yield broker.bootstrap, server
    server.stop()


@pytest.mark.parametrize("channel", ["file", "env", "flag"])
def test_throttle_is_the_gap_the_server_sees(channel: str, demo_topic: tuple[str, MediaServer],
                                             tmp_path: Path) -> None:
    """``[media] throttle`` through each channel is what a server observes between requests
    (wave 1: SHOAL_MEDIA_THROTTLE=7.5 still throttled at 0.2 s)."""
    brokers, server = demo_topic
    throttle = 0.6
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    argv = ["process", "--brokers", brokers, "--data-dir", str(tmp_path / "out"),
            "--idle-exit", "2", "--no-recovery", "--seal-processes", "0",
            "--allow-private-networks", "--domain-parallelism", "1", "--retries", "0"]
    if channel == "file":
        (tmp_path / "shoal.toml").write_text(f"[media]\nthrottle = {throttle}\n")
        argv += ["--config", str(tmp_path / "shoal.toml")]
    elif channel == "env":
        env["SHOAL_MEDIA_THROTTLE"] = str(throttle)
    else:
        argv += ["--throttle", str(throttle)]
    before = len(server.log)
    run = subprocess.run([sys.executable, "-m", "shoal", *argv], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    starts = sorted(start for _host, start, _end in server.log[before:])
    assert len(starts) >= 4, "the demo posts' media were not fetched"
    # The default (0.2 s) would put every gap near 0.2: every run of gaps is T long each,
    # to within the 30 ms by which a loaded machine can stamp one arrival late.
    assert tightest_window(starts, throttle) <= 0.030, starts
