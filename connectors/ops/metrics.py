"""Process-global metrics and health, served as Prometheus ``/metrics`` and JSON ``/healthz``.

The dataflow and the collectors call the module functions on their hot paths, so each call
is a dict lookup plus a counter increment: labelled children are cached here rather than
looked up through ``Counter.labels`` (which builds a tuple and takes a lock every time), and
"last seen" times are plain dict stores turned into gauges only when someone scrapes.

A dedicated registry (not prometheus_client's global one) keeps the page to shoal's own
metrics plus the process collectors, and lets tests start from a known state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("shoal.observe")

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# Media hosts include per-datacentre CDN names (scontent-fra5-1.cdninstagram.com ...): past
# this many distinct hosts the rest share one label, so a long crawl cannot blow up the series.
MAX_HOSTS = 200

POSTS_IN = Counter("shoal_posts_in", "Posts received, per collector", ["collector"],
                   registry=REGISTRY)
POSTS_OUT = Counter("shoal_posts_published", "Posts a collector published to Kafka",
                    ["collector"], registry=REGISTRY)
DEAD = Counter("shoal_dead_letters", "Inputs that could not become posts", registry=REGISTRY)
HOURS_SEALED = Counter("shoal_hours_sealed", "Hours sealed (re-seals included)", ["platform"],
                       registry=REGISTRY)
LATE = Counter("shoal_late_posts", "Posts that arrived for an already sealed hour",
               ["platform"], registry=REGISTRY)
FETCH = Counter("shoal_fetch_outcomes", "Media fetch results per host and outcome",
                ["host", "outcome"], registry=REGISTRY)
PENDING = Gauge("shoal_fetch_pending", "Media URLs waiting to be fetched, per host", ["host"],
                registry=REGISTRY)
LAG = Gauge("shoal_consumer_lag", "Messages behind the end of each Kafka partition",
            ["partition"], registry=REGISTRY)
LAST_SEAL = Gauge("shoal_last_seal_timestamp_seconds", "Unix time of the last sealed hour",
                  registry=REGISTRY)
HOOKS = Counter("shoal_hook_runs", "After-seal hook runs per outcome (ok, retry, failed)",
                ["outcome"], registry=REGISTRY)
HOOKS_PENDING = Gauge("shoal_hooks_pending", "After-seal hooks waiting to run",
                      registry=REGISTRY)
NOTICES = Counter("shoal_notices", "Alert notices sent per kind and channel outcome",
                  ["kind", "outcome"], registry=REGISTRY)

_lock = threading.Lock()  # guards creation of children and the late-count memory only
_posts_children: dict[str, Any] = {}
_out_children: dict[str, Any] = {}
_fetch_children: dict[tuple[str, str], Any] = {}
_host_label: dict[str, str] = {}
_lag_children: dict[int, Any] = {}
_last_post: dict[str, float] = {}
_late_seen: dict[tuple[str, int], int] = {}
_state: dict[str, float | None] = {"last_seal": None, "started": time.time()}
_seal_clock: list[Callable[[], float | None]] = []
_limits: dict[str, float | None] = {"seal": None, "post": None}
_checks: list[Callable[[], tuple[bool, str]]] = []


class _LastPostCollector(Collector):
    """Per-collector last-post time as a gauge, built at scrape time from the dict."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fam = GaugeMetricFamily("shoal_last_post_timestamp_seconds",
                                "Unix time of the last post received, per collector",
                                labels=["collector"])
        for name, ts in sorted(dict(_last_post).items()):  # a copy is atomic; iterating is not
            fam.add_metric([name], ts)
        yield fam


REGISTRY.register(_LastPostCollector())


# --------------------------------------------------------------------------- hot-path API


def posts_in(collector: str, n: int = 1, now: float | None = None) -> None:
    """Count posts received from a collector and remember when it last delivered."""
    child = _posts_children.get(collector)
    if child is None:
        with _lock:
            child = _posts_children.setdefault(collector, POSTS_IN.labels(collector))
    child.inc(n)
    _last_post[collector] = time.time() if now is None else now


def posts_out(collector: str, n: int = 1) -> None:
    """Count posts a collector published; kept apart from posts_in because ``shoal up`` runs
    collectors and the dataflow in one process."""
    child = _out_children.get(collector)
    if child is None:
        with _lock:
            child = _out_children.setdefault(collector, POSTS_OUT.labels(collector))
    child.inc(n)


def dead(n: int = 1) -> None:
    DEAD.inc(n)


def hour_sealed(summary: Any, now: float | None = None) -> None:
    """Count a sealed hour; ``summary`` is a HourSummary (only read, never imported here).

    ``summary.late`` is the hour's running total across re-seals, so the late counter adds
    only the increase since this process last saw the hour (a restart may count once more).
    """
    HOURS_SEALED.labels(summary.platform).inc()
    key = (summary.platform, summary.start)
    with _lock:
        before = _late_seen.get(key, 0)
        if summary.late > before:
            LATE.labels(summary.platform).inc(summary.late - before)
        if summary.late:
            _late_seen[key] = summary.late
            if len(_late_seen) > 10_000:  # hours re-sealed long ago: forget the oldest
                for old in sorted(_late_seen, key=lambda k: k[1])[:1000]:
                    del _late_seen[old]
    ts = time.time() if now is None else now
    _state["last_seal"] = ts
    LAST_SEAL.set(ts)


def fetch_outcome(host: str, outcome: str | int) -> None:
    """Count a fetch result: outcome is an HTTP status or a word (ok, timeout, refused...)."""
    key = (_host(host), str(outcome))
    child = _fetch_children.get(key)
    if child is None:
        with _lock:
            child = _fetch_children.setdefault(key, FETCH.labels(*key))
    child.inc()


def _host(host: str) -> str:
    """The host's label: its name, or ``other`` past MAX_HOSTS distinct hosts."""
    label = _host_label.get(host)
    if label is None:
        with _lock:
            label = host if len(_host_label) < MAX_HOSTS else "other"
            if label == host:
                _host_label[host] = host
    return label


def fetch_pending(host: str, n: int) -> None:
    """How many media URLs of ``host`` wait (queued, spilled or in flight)."""
    PENDING.labels(_host(host)).set(n)


def summary() -> dict[str, Any]:
    """What a progress line shows: totals read back from the counters of this process."""
    out: dict[str, Any] = {"posts_in": {}, "published": {}, "dead": 0, "seals": 0,
                           "fetched": 0, "failed": 0, "pending": {}}
    for metric in REGISTRY.collect():
        for s in metric.samples:
            if s.name == "shoal_posts_in_total":
                out["posts_in"][s.labels["collector"]] = int(s.value)
            elif s.name == "shoal_posts_published_total":
                out["published"][s.labels["collector"]] = int(s.value)
            elif s.name == "shoal_dead_letters_total":
                out["dead"] = int(s.value)
            elif s.name == "shoal_hours_sealed_total":
                out["seals"] += int(s.value)
            elif s.name == "shoal_fetch_outcomes_total":
                out["fetched" if s.labels["outcome"] == "ok" else "failed"] += int(s.value)
            elif s.name == "shoal_fetch_pending" and s.value:
                out["pending"][s.labels["host"]] = int(s.value)
    return out


def lag(partition: int, n: int) -> None:
    child = _lag_children.get(partition)
    if child is None:
        with _lock:
            child = _lag_children.setdefault(partition, LAG.labels(str(partition)))
    child.set(n)


def hook_run(outcome: str) -> None:
    HOOKS.labels(outcome).inc()


def hooks_pending(n: int) -> None:
    HOOKS_PENDING.set(n)


def notice_sent(kind: str, outcome: str) -> None:
    NOTICES.labels(kind, outcome).inc()


def last_post_times() -> dict[str, float]:
    """A copy of collector -> unix time of its last post (what the alerts watch)."""
    return dict(_last_post)


def last_seal_time() -> float | None:
    return _state["last_seal"]


# --------------------------------------------------------------------------- health


def set_health_limits(seal_seconds: float | None = None, post_seconds: float | None = None) -> None:
    """Make /healthz say not-ok (HTTP 503) once sealing or posts stop for that long.

    Without limits /healthz only proves the process answers, which is the right default for
    a collector of a quiet hashtag.
    """
    _limits["seal"] = seal_seconds
    _limits["post"] = post_seconds


def add_health_check(check: Callable[[], tuple[bool, str]]) -> None:
    """An extra condition for /healthz, e.g. 'the dataflow thread is alive'."""
    _checks.append(check)


def set_seal_clock(clock: Callable[[], float | None] | None) -> None:
    """Where else to learn when an hour was last sealed: in a cluster another process may
    be the one sealing, and it says so on disk (``connectors.store.reports.stamp_seal``)."""
    _seal_clock[:] = [clock] if clock is not None else []


def last_seal_anywhere() -> float | None:
    seen = [t for t in (_state["last_seal"], *(c() for c in _seal_clock)) if t is not None]
    return max(seen, default=None)


def health(now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    started = _state["started"] or now
    last_seal = last_seal_anywhere()
    posts = dict(_last_post)  # the dataflow may add a collector while we read
    last_post = max(posts.values(), default=None)
    since_seal = now - (last_seal if last_seal is not None else started)
    since_post = now - (last_post if last_post is not None else started)
    problems: list[str] = []
    if _limits["seal"] is not None and since_seal > _limits["seal"]:
        problems.append(f"no hour sealed for {since_seal:.0f} s")
    if _limits["post"] is not None and since_post > _limits["post"]:
        problems.append(f"no post for {since_post:.0f} s")
    for check in list(_checks):
        try:
            ok, why = check()
        except Exception as exc:  # a broken check is a failed check, not a crashed server
            ok, why = False, f"{type(exc).__name__}: {exc}"
        if not ok:
            problems.append(why)
    return {
        "ok": not problems,
        "status": "degraded" if problems else "ok",
        "problems": problems,
        "last_seal": _iso(last_seal),
        "seconds_since_last_seal": None if last_seal is None else round(now - last_seal, 3),
        "last_post": _iso(last_post),
        "seconds_since_last_post": None if last_post is None else round(now - last_post, 3),
        "collectors": {c: round(now - t, 3) for c, t in sorted(posts.items())},
        "uptime_seconds": round(now - started, 3),
    }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# --------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    server_version = "shoal-observe"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
        elif path == "/healthz":
            doc = health()
            self._send(200 if doc["ok"] else 503, "application/json", orjson.dumps(doc))
        else:
            self._send(404, "text/plain; charset=utf-8", b"try /metrics or /healthz\n")

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # scrapes every 15 s: stay quiet
        return


class MetricsServer:
    """The running server; ``port`` is the bound one (useful when asked for port 0)."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread):
        self._httpd = httpd
        self._thread = thread
        host, port = httpd.server_address[:2]
        self.host = host.decode() if isinstance(host, bytes) else str(host)
        self.port = int(port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def start_server(port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve /metrics and /healthz on a daemon thread; port 0 picks a free port."""
    httpd = ThreadingHTTPServer((host, port), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="shoal-metrics", daemon=True)
    thread.start()
    server = MetricsServer(httpd, thread)
    log.info("metrics server", extra={"fields": {"url": server.url}})
    return server


def reset_for_tests() -> None:
    """Forget every label and time; counters of unlabelled metrics keep counting."""
    with _lock:
        for metric in (POSTS_IN, POSTS_OUT, HOURS_SEALED, LATE, FETCH, LAG, HOOKS, NOTICES):
            metric.clear()
        _posts_children.clear()
        _out_children.clear()
        _fetch_children.clear()
        _host_label.clear()
        _lag_children.clear()
        _last_post.clear()
        _late_seen.clear()
        _checks.clear()
        _seal_clock.clear()
        _state["last_seal"] = None
        _state["started"] = time.time()
        _limits["seal"] = _limits["post"] = None
