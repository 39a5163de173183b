"""The metrics server as Prometheus and a healthcheck see it: real HTTP on loopback."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.kafka.broker import EmbeddedBroker, free_port
from connectors.ops import metrics
from shoal.merge import HourSummary


@pytest.fixture
def server() -> Iterator[metrics.MetricsServer]:
    metrics.reset_for_tests()
    srv = metrics.start_server(0, "127.0.0.1")
    try:
        yield srv
    finally:
        srv.close()
        metrics.reset_for_tests()


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _summary(platform: str, start: int, late: int) -> HourSummary:
    """A real HourSummary; fields this module does not read get empty values by type."""
    known: dict[str, Any] = {"platform": platform, "start": start, "day": "2024-05-01",
                             "label": "10", "late": late}
    empty = {"dict[str, int]": {}, "int": 0, "bool": False, "str": ""}
    return HourSummary(**{f.name: known.get(f.name, empty.get(str(f.type)))
                          for f in dataclasses.fields(HourSummary)})


def test_metrics_page_counts_what_was_reported(server: metrics.MetricsServer) -> None:
    dead_before = metrics.DEAD._value.get()
    metrics.posts_in("server-a", 3)
    metrics.posts_in("server-a")
    metrics.posts_in("server-b", 2, now=1_700_000_000.0)
    metrics.posts_out("server-a", 7)
    metrics.dead(2)
    metrics.hour_sealed(_summary("twitter", 3600, 0), now=1_700_000_100.0)
    metrics.hour_sealed(_summary("twitter", 3600, 2))
    metrics.hour_sealed(_summary("twitter", 3600, 5))  # running total: adds 3, not 5
    metrics.fetch_outcome("pbs.twimg.com", 200)
    metrics.fetch_outcome("pbs.twimg.com", 200)
    metrics.fetch_outcome("pbs.twimg.com", "timeout")
    metrics.lag(0, 17)
    metrics.lag(1, 4)
    metrics.lag(0, 12)
    metrics.hook_run("ok")

    status, ctype, body = _get(server.url + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    s = _samples(body)
    assert s[("shoal_posts_in_total", (("collector", "server-a"),))] == 4
    assert s[("shoal_posts_in_total", (("collector", "server-b"),))] == 2
    assert s[("shoal_posts_published_total", (("collector", "server-a"),))] == 7
    assert s[("shoal_dead_letters_total", ())] == dead_before + 2
    assert s[("shoal_hours_sealed_total", (("platform", "twitter"),))] == 3
    assert s[("shoal_late_posts_total", (("platform", "twitter"),))] == 5
    assert s[("shoal_fetch_outcomes_total", (("host", "pbs.twimg.com"), ("outcome", "200")))] == 2
    assert s[("shoal_fetch_outcomes_total",
              (("host", "pbs.twimg.com"), ("outcome", "timeout")))] == 1
    assert s[("shoal_consumer_lag", (("partition", "0"),))] == 12
    assert s[("shoal_consumer_lag", (("partition", "1"),))] == 4
    assert s[("shoal_hook_runs_total", (("outcome", "ok"),))] == 1
    assert s[("shoal_last_post_timestamp_seconds", (("collector", "server-b"),))] == 1_700_000_000
    assert s[("shoal_last_seal_timestamp_seconds", ())] > 1_700_000_100  # the later, real time
    assert any(name == "process_cpu_seconds_total" for name, _ in s)


def test_fetch_hosts_are_capped(server: metrics.MetricsServer) -> None:
    for i in range(metrics.MAX_HOSTS + 5):
        metrics.fetch_outcome(f"scontent-{i}.cdninstagram.com", 200)
    metrics.fetch_outcome("scontent-0.cdninstagram.com", 404)  # a known host keeps its label
    s = _samples(_get(server.url + "/metrics")[2])
    hosts = {dict(k[1])["host"] for k in s if k[0] == "shoal_fetch_outcomes_total"}
    assert len(hosts) == metrics.MAX_HOSTS + 1
    assert s[("shoal_fetch_outcomes_total", (("host", "other"), ("outcome", "200")))] == 5
    assert s[("shoal_fetch_outcomes_total",
              (("host", "scontent-0.cdninstagram.com"), ("outcome", "404")))] == 1


def test_healthz_reports_times_and_turns_503_when_stale(server: metrics.MetricsServer) -> None:
    status, ctype, body = _get(server.url + "/healthz")
    doc = json.loads(body)
    assert status == 200 and ctype == "application/json"
    assert doc["ok"] is True and doc["last_seal"] is None and doc["seconds_since_last_post"] is None

    now = time.time()
    metrics.posts_in("server-a", now=now - 30)
    metrics.hour_sealed(_summary("bluesky", 7200, 0), now=now - 600)
    doc = json.loads(_get(server.url + "/healthz")[2])
    assert doc["ok"] is True
    assert 29 <= doc["seconds_since_last_post"] <= 40
    assert 599 <= doc["seconds_since_last_seal"] <= 610
    assert doc["last_seal"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 600))
    assert set(doc["collectors"]) == {"server-a"}

    metrics.set_health_limits(seal_seconds=300)
    status, _, body = _get(server.url + "/healthz")
    doc = json.loads(body)
    assert status == 503 and doc["ok"] is False
    assert doc["problems"][0].startswith("no hour sealed for")

    metrics.set_health_limits(seal_seconds=3600, post_seconds=3600)
    metrics.add_health_check(lambda: (False, "dataflow thread died"))
    status, _, body = _get(server.url + "/healthz")
    assert status == 503 and json.loads(body)["problems"] == ["dataflow thread died"]

    assert _get(server.url + "/nope")[0] == 404


def test_healthz_counts_a_seal_stamped_by_another_process(
        server: metrics.MetricsServer, tmp_path: Path) -> None:
    from connectors.store.reports import last_seal_on_disk, stamp_seal

    metrics.set_health_limits(60, None)
    assert json.loads(_get(server.url + "/healthz")[2])["last_seal"] is None
    metrics.set_seal_clock(lambda: last_seal_on_disk(tmp_path))
    stamp_seal(tmp_path, "twitter", "2024-05-01")  # as the cluster's sealing process does
    doc = json.loads(_get(server.url + "/healthz")[2])
    assert doc["ok"] is True and 0 <= doc["seconds_since_last_seal"] < 5


def _healthz_until(url: str, status: int, what: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got, _, body = _get(url + "/healthz")
        except OSError:  # the server is not up yet
            got, body = 0, b"{}"
        if got == status:
            doc: dict[str, Any] = json.loads(body)
            return doc
        assert time.monotonic() < deadline, f"/healthz never {status} ({what}): {got} {body!r}"
        time.sleep(0.2)


def test_healthz_is_degraded_while_kafka_does_not_answer(tmp_path: Path) -> None:
    """`shoal process` against a broker that freezes (SIGSTOP) and thaws: 200, 503 naming
    Kafka while it is frozen, 200 again after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with EmbeddedBroker() as broker:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal", "process", "--brokers", broker.bootstrap,
             "--data-dir", str(tmp_path / "d"), "--no-media", "--metrics-port", str(port)],
            env={**os.environ, "SHOAL_METRICS_KAFKA_STALE_SECONDS": "2"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            first = _healthz_until(url, 200, "with Kafka up")
            assert first["status"] == "ok" and first["problems"] == []
            broker.pause()
            try:
                frozen = _healthz_until(url, 503, "with Kafka frozen")
            finally:
                broker.resume()
            assert frozen["status"] == "degraded"
            assert any(p.startswith("Kafka unreachable: no answer from " + broker.bootstrap)
                       for p in frozen["problems"]), frozen
            assert _healthz_until(url, 200, "after Kafka came back")["status"] == "ok"
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
