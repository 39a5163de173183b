"""The batch collectors' settings through the configuration, judged by what a server saw.

``[collectors] instagram_calls_per_hour`` in a file caps the queries our www.instagram.com
receives; ``SHOAL_COLLECTORS_IMAGES_MAX_RESULTS`` in the environment caps the results of each
keyword that reach Kafka. Both go through the same loading as ``shoal`` itself (file, then
environment, then flags).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shoal.app import config
from shoal.app.cli import build_parser
from shoal.batch import BatchProgress
from tests.fake_instagram import HOSTS, FakeInstagram, batch
from tests.live_helpers import KafkaTap, collector_name, finish
from tests.test_collect_images import FakeDuckDuckGo
from tests.tls import ConnectProxy, TestCA, TlsServer

ROOT = Path(__file__).resolve().parents[1]


def test_calls_per_hour_from_the_file_caps_what_instagram_sees(
        fixtures: Path, brokers: str, tap: KafkaTap, tmp_path: Path) -> None:
    fake: FakeInstagram = batch(fixtures)
    for p in fake.profiles.values():
        p.rate_limit, p.timeouts = False, 0  # only the ceiling is under test
    (tmp_path / "shoal.toml").write_text("[collectors]\ninstagram_calls_per_hour = 3\n"
                                         "instagram_pause = false\n")
    ca = TestCA(tmp_path / "ca", HOSTS)
    name = collector_name("igc")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    with TlsServer(fake.app(), ca) as server:
        env.update(ca.client_env(), SHOAL_RESOLVE=server.resolve_spec(HOSTS))
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal", "collect", "instagram", "--config",
             str(tmp_path / "shoal.toml"), "--brokers", brokers, "--collector", name,
             "--profiles", "alice", "carol", "--state", str(tmp_path / "state.json")],
            cwd=ROOT, env=env, stderr=subprocess.PIPE)
        # Wait until the server has heard nothing for 2 s: the collector sits at its ceiling.
        # The quiet is counted from the first request: on a loaded machine the process may
        # take more than 2 s to start, and a SIGTERM before its handler is a plain kill.
        deadline = time.monotonic() + 30
        quiet = time.monotonic()
        seen = 0
        while time.monotonic() < deadline and (seen == 0 or time.monotonic() - quiet < 2.0):
            time.sleep(0.1)
            if len(fake.requests) != seen:
                seen, quiet = len(fake.requests), time.monotonic()
        assert proc.poll() is None, finish(proc)[1][-5:]
        proc.send_signal(signal.SIGTERM)  # ends the hour-long wait at once
        code, logs = finish(proc, 30)
    assert code == 0, logs[-5:]
    # Three paced queries (profile page, profile query, first timeline page), plus the
    # unpaced start page; the default (20 an hour) would have fetched both profiles whole.
    paced = [path for _t, path in fake.requests if path != "/"]
    assert len(paced) == 3, fake.requests
    tap.settle(0.5)
    assert len(tap.posts(name)) < len(fake.profiles["alice"].posts) + len(
        fake.profiles["carol"].posts)
    waits = [x for x in logs if x.get("msg") == "hourly ceiling reached"]
    assert len(waits) == 1 and waits[0]["calls_per_hour"] == 3
    assert 3000 < waits[0]["wait_seconds"] <= 3600


def test_images_max_results_from_the_environment(brokers: str, tap: KafkaTap,
                                                 tmp_path: Path) -> None:
    fake = FakeDuckDuckGo()
    fake.limited = set()
    ca = TestCA(tmp_path / "ca", ["duckduckgo.com"])
    name = collector_name("imgc")
    env = {"SHOAL_COLLECTORS_IMAGES_MAX_RESULTS": "2",
           "SHOAL_COLLECTORS_IMAGES_CA_FILE": str(ca.ca_file)}
    with TlsServer(fake.app(), ca) as server, ConnectProxy(server.port) as proxy:
        env["SHOAL_COLLECTORS_IMAGES_PROXY"] = proxy.url
        argv = ["collect", "images", "cats", "dogs", "nothing", "--brokers", brokers,
                "--collector", name, "--retries", "0"]
        parser = build_parser()
        settings = config.prepare(parser, argv, env)
        args = parser.parse_args(argv)
        args.settings = config.resolve(args, settings)
        args.progress = BatchProgress("images")
        assert args.live_run(args) == 0
        assert set(proxy.tunnels) == {"duckduckgo.com"}
    tap.settle(1.0)
    by_query: dict[str, int] = {}
    for post in tap.posts(name):
        by_query[post["payload"]["query"]] = by_query.get(post["payload"]["query"], 0) + 1
    assert by_query == {"cats": 2, "dogs": 2}  # the fake has 3 each
    # The progress the bar draws counted the same.
    p = args.progress
    assert (p.total, p.done, p.posts, p.current) == (3, 3, 4, "")
    assert dict(p.outcomes) == {"ok": 2, "failed": 1}
    # `shoal config check` shows where the values came from, the proxy masked.
    shown = config.format_toml(settings)
    assert "images_max_results = 2  # env SHOAL_COLLECTORS_IMAGES_MAX_RESULTS" in shown
    assert proxy.url not in shown and "images_proxy = \"http://127.0.0.1/***\"" in shown
    assert json.dumps(config.as_dict(settings)).count("***") >= 1
