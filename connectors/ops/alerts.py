"""Alerts for a service left alone for months: silent collectors, sealing that stopped, and
the daily report, by email and/or webhook.

Each condition alerts once when it starts and once ("recovered") when it ends, never again
in between, so a weekend outage is two messages, not two thousand. Deciding is cheap and
synchronous (:meth:`Alerts.check`, :meth:`Alerts.on_sealed`); delivering happens on the
:class:`Notifier`'s own thread, so a slow or dead SMTP server never stalls the dataflow.

:meth:`Alerts.start` runs ``check`` on a timer thread of its own rather than from a dataflow
step: the condition "the processor stopped sealing" includes a dataflow that is stuck, and a
stuck dataflow would never call it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import smtplib
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

import orjson

from connectors.ops import metrics
from connectors.store.disk import atomic_write
from connectors.store.reports import sealed_days_on_disk

log = logging.getLogger("shoal.alerts")

STATE_FILE = "_work/alerts_state.json"


@dataclass(frozen=True)
class Notice:
    """One message: an alert, its recovery, or a day's report."""

    kind: str  # "alert" | "recovered" | "daily"
    condition: str  # "collector:NAME" | "sealing" | "daily:PLATFORM:DAY"
    subject: str
    body: str
    at: float
    extra: Mapping[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The webhook body; ``text`` is what chat webhooks (Slack, Mattermost) display."""
        return {
            "kind": self.kind,
            "condition": self.condition,
            "subject": self.subject,
            "body": self.body,
            "text": f"{self.subject}\n{self.body}",
            "time": _iso(self.at),
            **self.extra,
        }


class Channel(Protocol):
    name: str

    def send(self, notice: Notice) -> None:
        """Deliver or raise."""


class EmailChannel:
    name = "email"

    def __init__(self, host: str, port: int, sender: str, to: Sequence[str], *, user: str = "",
                 password: str = "", starttls: bool = True, use_ssl: bool = False,
                 timeout: float = 20.0) -> None:
        self.host, self.port, self.sender, self.to = host, port, sender, list(to)
        self.user, self.password = user, password
        self.starttls, self.use_ssl, self.timeout = starttls, use_ssl, timeout

    def send(self, notice: Notice) -> None:
        msg = EmailMessage()
        msg["Subject"] = notice.subject
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg["X-Shoal-Condition"] = notice.condition
        msg.set_content(notice.body)
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.use_ssl:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            smtp.ehlo()
            if self.starttls and not self.use_ssl:
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.user:
                smtp.login(self.user, self.password)
            smtp.send_message(msg)


class WebhookChannel:
    name = "webhook"

    def __init__(self, url: str, timeout: float = 20.0) -> None:
        self.url, self.timeout = url, timeout

    def send(self, notice: Notice) -> None:
        req = urllib.request.Request(
            self.url, data=orjson.dumps(notice.payload()), method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "shoal-alerts"},
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            if not 200 <= resp.status < 300:
                raise OSError(f"webhook answered HTTP {resp.status}")


class Notifier:
    """Delivers notices on a background thread, each channel retried a few times."""

    def __init__(self, channels: Iterable[Channel], *, attempts: int = 3, backoff: float = 5.0,
                 queue_size: int = 1000) -> None:
        self.channels = list(channels)
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self._queue: queue.Queue[Notice | None] = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shoal-notifier", daemon=True)
        self._thread.start()

    def send(self, notice: Notice) -> None:
        """Queue a notice; never blocks (a full queue means delivery is broken anyway)."""
        try:
            self._queue.put_nowait(notice)
        except queue.Full:
            metrics.notice_sent(notice.kind, "dropped")
            log.error("notice dropped: queue full", extra={"fields": {"subject": notice.subject}})

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far was delivered or given up."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, name="shoal-notifier-flush", daemon=True).start()
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            notice = self._queue.get()
            try:
                if notice is None:
                    return
                for channel in self.channels:
                    self._deliver(channel, notice)
            finally:
                self._queue.task_done()

    def _deliver(self, channel: Channel, notice: Notice) -> None:
        fields: dict[str, Any] = {"channel": channel.name, "kind": notice.kind,
                                  "condition": notice.condition}
        for attempt in range(1, self.attempts + 1):
            try:
                channel.send(notice)
            except Exception as exc:
                fields.update(attempt=attempt, error=f"{type(exc).__name__}: {exc}")
                if attempt == self.attempts or self._stop.is_set():
                    metrics.notice_sent(notice.kind, "failed")
                    log.error("notice not delivered", extra={"fields": fields})
                    return
                log.warning("notice delivery failed, retrying", extra={"fields": fields})
                self._stop.wait(self.backoff * 2 ** (attempt - 1))
            else:
                metrics.notice_sent(notice.kind, "ok")
                log.info("notice sent", extra={"fields": {**fields, "attempt": attempt}})
                return


class Alerts:
    """Decides when to notify; call :meth:`check` periodically and :meth:`on_sealed` per hour.

    Times are unix seconds and injectable, so tests step through hours without sleeping.
    ``last_posts`` supplies collector -> time of last post (``metrics.last_post_times`` in
    production, where the dataflow counts posts); :meth:`saw` feeds the same map by hand.
    """

    def __init__(
        self,
        notifier: Notifier,
        *,
        data_dir: Path | None = None,
        collector_silence: float = 30 * 60,
        seal_silence: float = 120 * 60,
        expect_collectors: Iterable[str] = (),
        daily_report: bool = True,
        last_posts: Callable[[], Mapping[str, float]] | None = None,
        prefix: str = "[shoal]",
        host: str | None = None,
        now: float | None = None,
    ) -> None:
        self.notifier = notifier
        self.data_dir = data_dir
        self.collector_silence = collector_silence
        self.seal_silence = seal_silence
        self.daily_report = daily_report
        self.prefix = prefix
        self.host = host or socket.gethostname()
        self._source = last_posts
        self._lock = threading.Lock()
        self.started = time.time() if now is None else now
        # Expected collectors count from start-up, so one that never delivers is noticed too.
        self.last_post: dict[str, float] = dict.fromkeys(expect_collectors, self.started)
        self.last_seal = self.started
        self._stamps_seen: dict[str, float] = {}  # per platform: the last seal stamp read
        self.active: dict[str, float] = {}  # condition -> when it was alerted
        self._timer: threading.Thread | None = None
        self._stop = threading.Event()
        self._state_path = data_dir / STATE_FILE if data_dir is not None else None
        self.last_day: dict[str, str] = {}
        self.reported: list[str] = []
        self._saved_watch: dict[str, Any] = {}
        self._load_state()

    @classmethod
    def from_settings(cls, alerts: Any, data_dir: Path | None,
                      last_posts: Callable[[], Mapping[str, float]] | None = None,
                      ) -> Alerts | None:
        """Built from the [alerts] section; None when no channel is configured."""
        channels: list[Channel] = []
        if alerts.smtp_host:
            channels.append(EmailChannel(
                alerts.smtp_host, alerts.smtp_port, alerts.smtp_from, alerts.smtp_to,
                user=alerts.smtp_user, password=alerts.smtp_password,
                starttls=alerts.smtp_starttls, use_ssl=alerts.smtp_ssl,
                timeout=alerts.timeout_seconds))
        if alerts.webhook_url:
            channels.append(WebhookChannel(alerts.webhook_url, alerts.timeout_seconds))
        if not channels:
            return None
        return cls(
            Notifier(channels), data_dir=data_dir,
            collector_silence=alerts.collector_silence_minutes * 60,
            seal_silence=alerts.seal_silence_minutes * 60,
            expect_collectors=alerts.expect_collectors, daily_report=alerts.daily_report,
            last_posts=last_posts if last_posts is not None else metrics.last_post_times,
            prefix=alerts.subject_prefix,
        )

    # -- inputs

    def saw(self, collector: str, when: float) -> None:
        with self._lock:
            if when > self.last_post.get(collector, float("-inf")):
                self.last_post[collector] = when

    def on_sealed(self, summary: Any, now: float | None = None) -> None:
        """An hour was sealed: sealing is alive, and a new day means the previous one is done.

        The report of day D goes out when the first hour of a later day is sealed for the
        platform; re-seals of old hours (late posts) do not send it again.
        """
        now = time.time() if now is None else now
        with self._lock:
            notices = self._note_seal(summary.platform, summary.day, now)
            notices.extend(self._evaluate(now))
        for n in notices:
            self.notifier.send(n)

    def _note_seal(self, platform: str, day: str, when: float) -> list[Notice]:
        notices = []
        self.last_seal = max(self.last_seal, when)
        before = self.last_day.get(platform)
        if before is None or day > before:
            self.last_day[platform] = day
            if before is not None and self.daily_report:
                tag = f"{platform}/{before}"
                if tag not in self.reported:
                    self.reported = [*self.reported[-99:], tag]
                    notices.append(self._daily(platform, before, when))
            self._save_state()
        return notices

    # -- decisions

    def check(self, now: float | None = None) -> list[Notice]:
        """Evaluate every condition; returns (and sends) the notices this call produced."""
        now = time.time() if now is None else now
        if self._source is not None:
            for name, when in self._source().items():
                self.saw(name, when)
        # In a cluster another process may be the one sealing: it leaves stamps in DIR, and
        # a seal seen there counts as one seen here (the same seal twice changes nothing).
        stamps = sealed_days_on_disk(self.data_dir) if self.data_dir is not None else {}
        with self._lock:
            notices = []
            for platform, (day, when) in sorted(stamps.items()):
                if when > self._stamps_seen.get(platform, float("-inf")):
                    self._stamps_seen[platform] = when
                    notices += self._note_seal(platform, day, min(when, now))
            notices += self._evaluate(now)
            watched = self._watched()
            if watched != self._saved_watch:
                self._save_state()
        for n in notices:
            self.notifier.send(n)
        return notices

    def _watched(self) -> dict[str, Any]:
        """What a restart must not forget: when each collector last delivered, when an hour
        was last sealed, and which conditions are already alerted on. A processor that
        restarts in a loop (Restart=always) would otherwise never stay up long enough to
        notice that nothing is collected or sealed any more."""
        return {"last_post": dict(self.last_post), "last_seal": self.last_seal,
                "active": dict(self.active)}

    def _evaluate(self, now: float) -> list[Notice]:
        out: list[Notice] = []
        silent = now - self.last_seal
        out += self._edge("sealing", silent > self.seal_silence, now,
                          f"no hour sealed for {_dur(silent)}",
                          f"sealing again after {_dur(now - self.active.get('sealing', now))}",
                          f"The processor on {self.host} sealed no hour since "
                          f"{_iso(self.last_seal)} (limit {_dur(self.seal_silence)}).")
        for name, last in sorted(self.last_post.items()):
            cond = f"collector:{name}"
            silent = now - last
            out += self._edge(cond, silent > self.collector_silence, now,
                              f"collector {name} silent for {_dur(silent)}",
                              f"collector {name} delivering again after "
                              f"{_dur(now - self.active.get(cond, now))}",
                              f"No post from collector {name!r} reached the processor on "
                              f"{self.host} since {_iso(last)} "
                              f"(limit {_dur(self.collector_silence)}).",
                              collector=name)
        return out

    def _edge(self, cond: str, failing: bool, now: float, alert: str, recovered: str,
              detail: str, **extra: Any) -> list[Notice]:
        if failing and cond not in self.active:
            self.active[cond] = now
            return [Notice("alert", cond, f"{self.prefix} ALERT {alert}", detail, now,
                           {"host": self.host, **extra})]
        if not failing and cond in self.active:
            notice = Notice("recovered", cond, f"{self.prefix} RECOVERED {recovered}",
                            f"{recovered} ({_iso(now)}).", now, {"host": self.host, **extra})
            del self.active[cond]
            return [notice]
        return []

    def _daily(self, platform: str, day: str, now: float) -> Notice:
        path = (self.data_dir / platform / day / f"{day}_report.txt"
                if self.data_dir is not None else None)
        text = path.read_text(encoding="utf-8") if path is not None and path.is_file() else ""
        hours, total = _report_totals(text)
        body = text or f"(no report file at {path})\n"
        return Notice("daily", f"daily:{platform}:{day}",
                      f"{self.prefix} {platform} {day}: {total} posts in {hours} hours",
                      body, now, {"host": self.host, "platform": platform, "day": day,
                                  "total": total, "hours": hours})

    # -- timer

    def start(self, interval: float = 60.0) -> None:
        """Check every ``interval`` seconds on a daemon thread, independent of the dataflow."""
        if self._timer is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.check()
                except Exception:  # an alerting bug must not end alerting
                    log.exception("alert check failed")

        self._timer = threading.Thread(target=loop, name="shoal-alerts", daemon=True)
        self._timer.start()

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout)
        self.notifier.close(timeout)

    # -- state

    def _load_state(self) -> None:
        if self._state_path is None or not self._state_path.is_file():
            return
        try:
            doc = orjson.loads(self._state_path.read_bytes())
            self.last_day = {str(k): str(v) for k, v in doc.get("last_day", {}).items()}
            self.reported = [str(x) for x in doc.get("reported", [])][-100:]
            # A collector that fell silent before a restart stays watched from its last post,
            # sealing from its last seal, and a condition already alerted on is not alerted
            # again (its recovery is still sent): without this, a restart forgot every
            # collector not in expect_collectors, and the silences started over.
            for name, when in doc.get("last_post", {}).items():
                self.last_post[str(name)] = float(when)
            if "last_seal" in doc:
                self.last_seal = min(self.last_seal, float(doc["last_seal"]))
            self.active.update({str(c): float(t) for c, t in doc.get("active", {}).items()})
            self._saved_watch = self._watched()
        except (orjson.JSONDecodeError, AttributeError, OSError, TypeError, ValueError):
            log.warning("alert state unreadable; starting afresh",
                        extra={"fields": {"path": str(self._state_path)}})

    def _save_state(self) -> None:
        if self._state_path is None:
            return
        self._saved_watch = self._watched()
        doc = {"last_day": self.last_day, "reported": self.reported, **self._saved_watch}
        try:
            atomic_write(self._state_path, orjson.dumps(doc))
        except OSError as exc:
            log.warning("alert state not saved", extra={"fields": {"error": str(exc)}})


def _report_totals(text: str) -> tuple[int, int]:
    """(hours, posts) of a day report, read by its header so collector columns do not matter."""
    lines = [ln.split("\t") for ln in text.splitlines() if ln.strip()]
    if not lines or "total" not in lines[0]:
        return 0, 0
    col = lines[0].index("total")
    rows = [r for r in lines[1:] if len(r) > col and r[col].isdigit()]
    return len(rows), sum(int(r[col]) for r in rows)


def _dur(seconds: float) -> str:
    minutes = max(0, round(seconds / 60))
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
