"""Alerts end to end: a real SMTP server (aiosmtpd) and a real webhook receiver (aiohttp), both
on loopback, with time injected so hours of silence take no time at all."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import socket
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from connectors.ops import metrics
from connectors.ops.alerts import Alerts, EmailChannel, Notifier, WebhookChannel
from shoal.merge import HourSummary
from shoal.options import AlertsSettings

T0 = 1_700_000_000.0
MIN = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inbox:
    """aiosmtpd handler keeping every message; ``delay`` simulates a slow server."""

    def __init__(self, delay: float = 0.0) -> None:
        self.messages: list[EmailMessage] = []
        self.delay = delay
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        return "250 OK"

    def auth(self, server: Any, session: Any, envelope: Any, mechanism: str,
             auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"s3cret"
        if ok:
            self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = _free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=inbox.auth,
                     auth_require_tls=False)
    ctl.start()
    try:
        yield inbox, port
    finally:
        ctl.stop()


class Hook:
    """aiohttp webhook receiver on its own loop thread; fails the first ``fail`` requests."""

    def __init__(self, fail: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail = fail
        self.calls = 0
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        self.loop.run_forever()

    async def _handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls <= self.fail:
            return web.Response(status=500)
        assert request.content_type == "application/json"
        self.received.append(await request.json())
        return web.Response(text="ok")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    try:
        yield h
    finally:
        h.close()


def _summary(platform: str, day: str, label: str = "10") -> HourSummary:
    known: dict[str, Any] = {"platform": platform, "start": 0, "day": day, "label": label}
    empty = {"dict[str, int]": {}, "int": 0, "bool": False, "str": ""}
    return HourSummary(**{f.name: known.get(f.name, empty.get(str(f.type)))
                          for f in dataclasses.fields(HourSummary)})


def _body(msg: EmailMessage) -> str:
    return str(msg.get_content()).replace("\r\n", "\n")


def _email(port: int, **kw: Any) -> EmailChannel:
    return EmailChannel("127.0.0.1", port, "shoal@lab.example", ["ops@lab.example"],
                        starttls=False, timeout=5, **kw)


def test_silent_collector_alerts_once_then_recovers_by_email_and_webhook(
        smtp: tuple[Inbox, int], hook: Hook) -> None:
    inbox, port = smtp
    notifier = Notifier([_email(port, user="shoal", password="s3cret"),
                         WebhookChannel(hook.url, 5)], backoff=0.01)
    alerts = Alerts(notifier, collector_silence=30 * MIN, seal_silence=120 * MIN,
                    host="proc-1", now=T0)
    alerts.saw("server-a", T0)
    alerts.saw("server-b", T0)
    assert alerts.check(T0 + 10 * MIN) == []
    alerts.saw("server-b", T0 + 25 * MIN)
    first = alerts.check(T0 + 31 * MIN)
    assert [(n.kind, n.condition) for n in first] == [("alert", "collector:server-a")]
    # Still silent, for much longer: no second message.
    assert alerts.check(T0 + 40 * MIN) == []
    assert alerts.check(T0 + 50 * MIN) == []
    alerts.saw("server-a", T0 + 51 * MIN)
    back = alerts.check(T0 + 52 * MIN)
    assert [(n.kind, n.condition) for n in back] == [("recovered", "collector:server-a")]
    assert alerts.check(T0 + 53 * MIN) == []
    assert notifier.flush(10)

    subjects = [m["Subject"] for m in inbox.messages]
    assert subjects == ["[shoal] ALERT collector server-a silent for 31 min",
                        "[shoal] RECOVERED collector server-a delivering again after 21 min"]
    assert inbox.messages[0]["To"] == "ops@lab.example"
    assert "since 2023-11-14T22:13:20Z" in _body(inbox.messages[0])
    assert inbox.logins == [(b"shoal", b"s3cret")] * 2
    assert [(d["kind"], d["condition"], d["collector"], d["host"]) for d in hook.received] == [
        ("alert", "collector:server-a", "server-a", "proc-1"),
        ("recovered", "collector:server-a", "server-a", "proc-1")]
    assert hook.received[0]["text"].startswith("[shoal] ALERT collector server-a")
    notifier.close()


def test_sealing_stops_and_expected_collector_never_delivers(hook: Hook) -> None:
    notifier = Notifier([WebhookChannel(hook.url, 5)], backoff=0.01)
    alerts = Alerts(notifier, collector_silence=30 * MIN, seal_silence=90 * MIN,
                    expect_collectors=["server-c"], now=T0)
    assert alerts.check(T0 + 29 * MIN) == []
    assert [n.condition for n in alerts.check(T0 + 31 * MIN)] == ["collector:server-c"]
    alerts.on_sealed(_summary("twitter", "2024-05-01"), now=T0 + 60 * MIN)
    assert alerts.check(T0 + 149 * MIN) == []
    assert [n.condition for n in alerts.check(T0 + 151 * MIN)] == ["sealing"]
    assert alerts.check(T0 + 400 * MIN) == []
    alerts.on_sealed(_summary("twitter", "2024-05-01", "11"), now=T0 + 401 * MIN)
    assert notifier.flush(10)
    kinds = [(d["kind"], d["condition"]) for d in hook.received]
    assert kinds == [("alert", "collector:server-c"), ("alert", "sealing"),
                     ("recovered", "sealing")]
    assert hook.received[1]["subject"] == "[shoal] ALERT no hour sealed for 91 min"
    assert hook.received[2]["subject"] == "[shoal] RECOVERED sealing again after 4 h 10 min"
    notifier.close()


def test_daily_report_sent_once_per_day_even_across_restarts(
        tmp_path: Path, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    report = tmp_path / "twitter" / "2024-05-01" / "2024-05-01_report.txt"
    report.parent.mkdir(parents=True)
    report.write_text("hour\tserver-a\tserver-b\ttotal\tdiff\tdiff %\tlate\n"
                      "00\t100\t90\t110\t30\t27.27\t0\n01\t40\t40\t40\t0\t0.00\t2\n")
    notifier = Notifier([_email(port)], backoff=0.01)
    alerts = Alerts(notifier, data_dir=tmp_path, now=T0)
    alerts.on_sealed(_summary("twitter", "2024-05-01", "00"), now=T0)
    alerts.on_sealed(_summary("twitter", "2024-05-01", "01"), now=T0)
    alerts.on_sealed(_summary("bluesky", "2024-05-02", "00"), now=T0)  # other platform: own day
    assert notifier.flush(10) and inbox.messages == []
    alerts.on_sealed(_summary("twitter", "2024-05-02", "00"), now=T0)
    alerts.on_sealed(_summary("twitter", "2024-05-01", "01"), now=T0)  # late re-seal
    alerts.on_sealed(_summary("twitter", "2024-05-02", "01"), now=T0)
    assert notifier.flush(10)
    assert [m["Subject"] for m in inbox.messages] == [
        "[shoal] twitter 2024-05-01: 150 posts in 2 hours"]
    assert _body(inbox.messages[0]) == report.read_text()

    restarted = Alerts(notifier, data_dir=tmp_path, now=T0)
    restarted.on_sealed(_summary("twitter", "2024-05-02", "02"), now=T0)
    restarted.on_sealed(_summary("twitter", "2024-05-03", "00"), now=T0)
    assert notifier.flush(10)
    assert [m["Subject"] for m in inbox.messages][1:] == [
        "[shoal] twitter 2024-05-02: 0 posts in 0 hours"]  # its report file does not exist
    assert "no report file" in _body(inbox.messages[1])
    notifier.close()


def test_a_restart_remembers_silent_collectors_and_alerts_already_sent(
        tmp_path: Path, hook: Hook) -> None:
    """The processor restarted (systemd, a crash) while server-b was down: server-b is still
    watched from its last post, its alert is not sent twice, and its recovery is sent."""
    notifier = Notifier([WebhookChannel(hook.url, 5)], backoff=0.01)
    first = Alerts(notifier, data_dir=tmp_path, collector_silence=30 * MIN, now=T0)
    first.saw("server-a", T0)
    first.saw("server-b", T0)
    assert first.check(T0 + 10 * MIN) == []
    # server-b dies; the processor restarts at +20 min, before its silence was noticed.
    later = Alerts(notifier, data_dir=tmp_path, collector_silence=30 * MIN, now=T0 + 20 * MIN)
    later.saw("server-a", T0 + 25 * MIN)
    assert [n.condition for n in later.check(T0 + 31 * MIN)] == ["collector:server-b"]
    # Restarted again while the alert stands: no second alert, and the recovery still comes.
    again = Alerts(notifier, data_dir=tmp_path, collector_silence=30 * MIN, now=T0 + 40 * MIN)
    again.saw("server-a", T0 + 79 * MIN)
    assert again.check(T0 + 80 * MIN) == []
    again.saw("server-b", T0 + 81 * MIN)
    again.saw("server-a", T0 + 81 * MIN)
    assert [(n.kind, n.condition) for n in again.check(T0 + 82 * MIN)] == [
        ("recovered", "collector:server-b")]
    assert notifier.flush(10)
    assert [(d["kind"], d["condition"]) for d in hook.received] == [
        ("alert", "collector:server-b"), ("recovered", "collector:server-b")]
    notifier.close()


def test_a_processor_restarting_in_a_loop_still_reports_that_nothing_is_sealed(
        tmp_path: Path, hook: Hook) -> None:
    """Restart=always and a processor that dies every few minutes: the sealing silence runs
    on across the restarts instead of starting over with each one."""
    notifier = Notifier([WebhookChannel(hook.url, 5)], backoff=0.01)
    first = Alerts(notifier, data_dir=tmp_path, seal_silence=90 * MIN, now=T0)
    first.on_sealed(_summary("twitter", "2024-05-01"), now=T0)
    assert first.check(T0 + 1 * MIN) == []
    fired = []
    for k in range(1, 12):  # a restart every 10 minutes, each checked once before it dies
        alive = Alerts(notifier, data_dir=tmp_path, seal_silence=90 * MIN, now=T0 + k * 10 * MIN)
        fired += [n.condition for n in alive.check(T0 + k * 10 * MIN + MIN)]
    assert fired == ["sealing"]
    back = Alerts(notifier, data_dir=tmp_path, seal_silence=90 * MIN, now=T0 + 130 * MIN)
    back.on_sealed(_summary("twitter", "2024-05-01", "11"), now=T0 + 131 * MIN)
    assert notifier.flush(10)
    assert [(d["kind"], d["condition"]) for d in hook.received] == [
        ("alert", "sealing"), ("recovered", "sealing")]
    notifier.close()


def test_delivery_never_blocks_the_caller_and_retries(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    inbox.delay = 1.0
    flaky = Hook(fail=2)
    dead_port = _free_port()  # nothing listens there
    failed_before = metrics.NOTICES.labels("alert", "failed")._value.get()
    try:
        notifier = Notifier([_email(port), WebhookChannel(flaky.url, 5), _email(dead_port)],
                            attempts=3, backoff=0.01)
        alerts = Alerts(notifier, collector_silence=MIN, now=T0)
        alerts.saw("server-a", T0)
        t0 = time.monotonic()
        notices = alerts.check(T0 + 2 * MIN)
        assert time.monotonic() - t0 < 0.5  # the SMTP server takes a second per message
        assert len(notices) == 1
        assert notifier.flush(20)
        assert len(inbox.messages) == 1
        assert flaky.calls == 3 and len(flaky.received) == 1  # two 500s, then delivered
        assert metrics.NOTICES.labels("alert", "failed")._value.get() == failed_before + 1
        notifier.close()
    finally:
        flaky.close()


def test_from_settings_builds_channels_only_when_configured(tmp_path: Path) -> None:
    assert Alerts.from_settings(AlertsSettings(), tmp_path) is None
    cfg = AlertsSettings(smtp_host="127.0.0.1", smtp_from="a@b.c", smtp_to=["d@e.f"],
                         webhook_url="http://127.0.0.1:1/x", collector_silence_minutes=5,
                         expect_collectors=["x"])
    now = time.time()
    alerts = Alerts.from_settings(cfg, tmp_path, last_posts=lambda: {"y": now})
    assert alerts is not None
    assert [c.name for c in alerts.notifier.channels] == ["email", "webhook"]
    assert alerts.collector_silence == 300
    assert alerts.check(alerts.started + 1) == []
    assert set(alerts.last_post) == {"x", "y"}  # expected + pulled from the source
    alerts.close(1)


def test_seals_by_another_cluster_process_keep_sealing_alive_and_close_days(
        tmp_path: Path, hook: Hook) -> None:
    """In a cluster one process seals; process 0 alerts, learning of seals from DIR."""
    import os

    from connectors.store.layout import SEAL_STAMPS
    from connectors.store.reports import stamp_seal

    notifier = Notifier([WebhookChannel(hook.url, 5)], backoff=0.01)
    alerts = Alerts(notifier, seal_silence=90 * MIN, data_dir=tmp_path, now=T0)

    def sealed_elsewhere(day: str, at: float) -> None:
        stamp_seal(tmp_path, "twitter", day)
        os.utime(tmp_path / SEAL_STAMPS / "twitter", (at, at))

    assert [n.condition for n in alerts.check(T0 + 91 * MIN)] == ["sealing"]
    sealed_elsewhere("2024-05-01", T0 + 100 * MIN)
    assert [n.condition for n in alerts.check(T0 + 101 * MIN)] == ["sealing"]  # recovered
    assert alerts.check(T0 + 189 * MIN) == []
    sealed_elsewhere("2024-04-30", T0 + 190 * MIN)  # a late re-seal: the stamp keeps the day
    assert alerts.check(T0 + 191 * MIN) == []
    sealed_elsewhere("2024-05-02", T0 + 200 * MIN)  # the first hour of a new day
    notices = alerts.check(T0 + 201 * MIN)
    assert [n.condition for n in notices] == ["daily:twitter:2024-05-01"]
    assert alerts.check(T0 + 289 * MIN) == []
    assert [n.condition for n in alerts.check(T0 + 291 * MIN)] == ["sealing"]  # silent again
    notifier.close()
