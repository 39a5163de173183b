"""The fetch engine against real aiohttp servers of ours on several loopback addresses.

Politeness is judged where it matters, at the server: the times at which requests arrive
and how many are in flight at once, per host name.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import gzip
import http.client
import itertools
import json
import multiprocessing
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from connectors.fetch.engine import Fetcher, FetchService
from connectors.fetch.ledger import FetchLedger
from shoal.fetch import FetchConfig, FetchResult
from tests.loopback_server import serve_on_loopback, stamp_arrivals

HOSTS = {"img1.test": "127.0.0.2", "img2.test": "127.0.0.3", "img3.test": "127.0.0.4"}
ARRIVALS: dict[int, float] = {}  # server side: connection -> its latest request's arrival
JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF\x00"


@dataclass
class Hit:
    host: str
    path: str
    start: float  # time.monotonic() when the handler began (system-wide on Linux)
    wall: float  # time.time() at the same moment, for HTTP-date comparisons
    end: float = 0.0


class MediaApp:
    """The server side, run in its own process so that its clock readings do not wait on
    the client's GIL: one aiohttp app on every address of ``HOSTS`` and one port."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.counters: dict[str, int] = defaultdict(int)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/_hits":
            return web.json_response([asdict(h) for h in self.hits])
        # The moment the request's bytes came in, not the later moment its handler runs.
        arrived = ARRIVALS.get(id(request.protocol), time.monotonic())
        wall = time.time() - (time.monotonic() - arrived)
        hit = Hit(request.host.rsplit(":", 1)[0], request.path_qs, arrived, wall)
        self.hits.append(hit)
        try:
            return await self.respond(request)
        finally:
            hit.end = time.monotonic()

    async def respond(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        kind = request.path.strip("/").split("/", 1)[0]
        self.counters[request.path_qs] += 1
        n = self.counters[request.path_qs]
        if "delay" in q:
            await asyncio.sleep(float(q["delay"]))
        if kind == "img":
            return web.Response(body=JPEG + request.path.encode(), content_type="image/jpeg")
        if kind == "same":
            return web.Response(body=JPEG + b"identical", content_type="image/jpeg")
        if kind == "status":
            return web.Response(status=int(q["code"]))
        if kind == "flaky":
            if n <= int(q["fails"]):
                return web.Response(status=int(q.get("code", 503)))
            return web.Response(body=JPEG + b"flaky", content_type="image/jpeg")
        if kind == "ra":
            if n == 1:
                value = q["after"]
                if value == "date":
                    value = formatdate(time.time() + 2, usegmt=True)
                return web.Response(status=429, headers={"Retry-After": value})
            return web.Response(body=JPEG + b"ra", content_type="image/jpeg")
        if kind == "redirect":
            return web.Response(status=302, headers={"Location": q["to"]})
        if kind == "hang":
            await asyncio.sleep(30)
            return web.Response(body=b"late")
        if kind == "endless":
            resp = web.StreamResponse(headers={"Content-Type": "video/mp4"})
            await resp.prepare(request)
            for _ in range(100_000):
                await resp.write(b"\x00" * 65536)
            return resp
        if kind == "big":
            return web.Response(body=b"\x00" * int(q["n"]), content_type="video/mp4")
        if kind == "empty":  # a status without a body, or a 200 with an empty one
            return web.Response(status=int(q.get("code", 200)), body=b"",
                                content_type="image/jpeg")
        if kind == "partial":
            return web.Response(status=206, body=JPEG + b"partial", content_type="image/jpeg",
                                headers={"Content-Range": "bytes 0-16/1000"})
        if kind == "text":
            return web.Response(text="<html>hello</html>", content_type="text/html")
        return web.Response(status=404)


def serve(port_out: Any, lifetime: float) -> None:
    """Child process: serve until the parent goes or ``lifetime`` runs out.

    It is our measuring instrument: a higher priority (when allowed) and no garbage
    collection keep its clock readings close to the arrival of each request.
    """
    with contextlib.suppress(OSError):
        os.nice(-10)
    gc.disable()  # a collection pass would delay some clock readings by milliseconds
    stamp_arrivals(ARRIVALS)

    async def main() -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", MediaApp().handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        port_out.send(await serve_on_loopback(runner, [*HOSTS.values(), "127.0.0.1"]))
        await asyncio.sleep(lifetime)

    asyncio.run(main())


@dataclass
class MediaServer:
    """The test's handle on the server process."""

    port: int

    def url(self, host: str, path: str) -> str:
        return f"http://{host}:{self.port}{path}"

    @property
    def hits(self) -> list[Hit]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/_hits")
            return [Hit(**h) for h in json.loads(conn.getresponse().read())]
        finally:
            conn.close()

    def hits_for(self, host: str) -> list[Hit]:
        return sorted((h for h in self.hits if h.host == host), key=lambda h: h.start)

    def count(self, path_qs: str) -> int:
        return sum(1 for h in self.hits if h.path == path_qs)


@pytest.fixture(scope="module")
def server() -> Iterator[MediaServer]:
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=serve, args=(send, 300.0), daemon=True)
    proc.start()
    try:
        assert recv.poll(30), "test server did not start"
        srv = MediaServer(recv.recv())
        for ip in HOSTS.values():  # warm the server's code paths before anything is measured
            conn = http.client.HTTPConnection(ip, srv.port, timeout=10)
            conn.request("GET", "/img/warm-up")
            conn.getresponse().read()
            conn.close()
        yield srv
    finally:
        proc.terminate()
        proc.join(10)


def config(**kw: object) -> FetchConfig:
    base: dict[str, object] = dict(
        resolve=HOSTS, throttle=0.0, domain_parallelism=4, backoff_base=0.05, backoff_max=0.2,
        connect_timeout=2, read_timeout=5, total_timeout=10,
    )
    base.update(kw)
    return FetchConfig(**base)  # type: ignore[arg-type]


def guard() -> tuple[aiohttp.TraceConfig, list[str]]:
    """Aborts, before any connection, a request to anything but our test host names: the
    safety tests must not send traffic elsewhere even if the engine were wrong."""
    seen: list[str] = []
    trace = aiohttp.TraceConfig()

    async def on_start(_s: object, _c: object, params: aiohttp.TraceRequestStartParams) -> None:
        seen.append(str(params.url))
        if params.url.host not in (*HOSTS, "localhost"):
            raise AssertionError(f"request to {params.url} would leave the test hosts")

    trace.on_request_start.append(on_start)
    return trace, seen


def fetch_all(
    root: Path, cfg: FetchConfig, urls: list[str], ledger: FetchLedger | None = None,
    trace: aiohttp.TraceConfig | None = None,
) -> list[FetchResult]:
    async def go() -> list[FetchResult]:
        async with Fetcher(cfg, root, ledger, [trace] if trace else None) as f:
            return list(await asyncio.gather(*(f.fetch(u, {}) for u in urls)))

    return asyncio.run(asyncio.wait_for(go(), 40))


def media_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "media").rglob("*") if p.is_file())


# --- politeness ---------------------------------------------------------------------------


def test_parallelism_and_throttle_hold_together_at_the_server(
    server: MediaServer, tmp_path: Path
) -> None:
    cfg = config(
        domain_parallelism=2, throttle=0.08, per_host={"img2.test": (3, 0.05)},
        split_hosts={"img1.test": 3},  # sub-keys share img1's budget, never multiply it
    )
    tag = "pol"
    urls = [server.url(h, f"/img/{tag}{h}{i}?delay=0.25") for h in ("img1.test", "img2.test")
            for i in range(10)]
    results = fetch_all(tmp_path, cfg, urls)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    for host, (p, t) in {"img1.test": (2, 0.08), "img2.test": (3, 0.05)}.items():
        hits = [h for h in server.hits_for(host) if tag in h.path]
        assert len(hits) == 10
        gaps = [b.start - a.start for a, b in itertools.pairwise(hits)]
        assert min(gaps) >= t, (host, min(gaps), gaps)
        concurrent = max(sum(1 for o in hits if o.start <= h.start < o.end) for h in hits)
        assert concurrent <= p
        assert concurrent == p  # latency 0.25 s >> T: the budget is used, not wasted


def test_a_host_limit_holds_under_domain_keying(server: MediaServer, tmp_path: Path) -> None:
    """``--host-limit a.shoal.test=1,T`` with ``--domain-key domain``: the budget is
    shoal.test's, and the override is its limit, for every host of the domain (it was
    looked up by host name and never found: no gap at all)."""
    hosts = {"a.shoal.test": HOSTS["img1.test"], "b.shoal.test": HOSTS["img2.test"]}
    cfg = config(resolve={**HOSTS, **hosts}, domain_key="domain", domain_parallelism=4,
                 throttle=0.0, per_host={"a.shoal.test": (1, 0.2)})
    urls = [server.url(h, f"/img/domain-limit-{h}-{i}") for h in hosts for i in range(3)]
    results = fetch_all(tmp_path, cfg, urls)
    assert all(r.ok for r in results), [r.error for r in results]
    hits = sorted((h for h in server.hits if "domain-limit" in h.path), key=lambda h: h.start)
    assert len(hits) == 6
    gaps = [b.start - a.start for a, b in itertools.pairwise(hits)]
    assert min(gaps) >= 0.2, gaps
    assert all(a.end <= b.start for a, b in itertools.pairwise(hits))  # P = 1


def test_429_retry_after_seconds_blocks_the_host(server: MediaServer, tmp_path: Path) -> None:
    cfg = config(domain_parallelism=2, throttle=0.0)
    first = server.url("img3.test", "/ra/s?after=1")
    others = [server.url("img3.test", f"/img/ra-other{i}?delay=0.05") for i in range(3)]

    async def go() -> list[FetchResult]:
        async with Fetcher(cfg, tmp_path) as f:
            t0 = asyncio.create_task(f.fetch(first))
            await asyncio.sleep(0.2)  # the 429 has come back: the others meet a blocked key
            rest = await asyncio.gather(*(f.fetch(u) for u in others))
            return [await t0, *rest]

    results = asyncio.run(asyncio.wait_for(go(), 20))
    assert all(r.ok for r in results)
    assert results[0].attempts == 2
    hits = server.hits_for("img3.test")
    blocked = next(h for h in hits if h.path == "/ra/s?after=1")
    later = [h for h in hits if h.start > blocked.start]
    assert len(later) == 4
    assert min(h.start for h in later) >= blocked.end + 1.0


def test_429_retry_after_http_date_is_honoured(server: MediaServer, tmp_path: Path) -> None:
    url = server.url("img3.test", "/ra/d?after=date")
    (result,) = fetch_all(tmp_path, config(), [url])
    assert result.ok and result.attempts == 2
    first, second = [h for h in server.hits_for("img3.test") if h.path == "/ra/d?after=date"]
    # The date said first.wall + 2 s, truncated to the second.
    assert second.wall >= int(first.wall + 2)


def test_url_deadline_holds_across_a_retry_after_block(
    server: MediaServer, tmp_path: Path
) -> None:
    """A Retry-After past the URL's deadline gives the URL up at once (it waited the whole
    block, up to an hour, then gave up); a URL of the blocked host waiting for its retry
    waits no longer than its deadline leaves."""
    cfg = config(url_deadline=1.5, retries=3, backoff_base=0.05, backoff_max=0.05)
    blocked = server.url("img3.test", "/ra/deadline?after=30")
    waiting = server.url("img3.test", "/flaky/deadline?fails=1&code=500&delay=0.3")

    async def go() -> list[FetchResult]:
        async with Fetcher(cfg, tmp_path) as f:
            return list(await asyncio.gather(f.fetch(waiting), f.fetch(blocked)))

    # Bounded well below the 30 s block: the old engine waited it out.
    slow, ra = asyncio.run(asyncio.wait_for(go(), 10))
    assert ra.attempts == 1 and ra.error == (
        "http 429; gave up: Retry-After 30s would pass --url-deadline 1.5s after 1 attempt")
    assert slow.attempts == 1 and slow.error == (
        "http 500; gave up: --url-deadline 1.5s reached after 1 attempt"), slow.error
    assert server.count("/ra/deadline?after=30") == 1


def test_5xx_is_retried_then_succeeds(server: MediaServer, tmp_path: Path) -> None:
    url = server.url("img1.test", "/flaky/a?fails=2&code=500")
    (result,) = fetch_all(tmp_path, config(retries=3), [url])
    assert result.ok and result.attempts == 3 and result.http_status == 200


def test_retries_are_bounded(server: MediaServer, tmp_path: Path) -> None:
    url = server.url("img1.test", "/flaky/b?fails=9&code=502")
    (result,) = fetch_all(tmp_path, config(retries=2), [url])
    assert result.error == "http 502" and result.attempts == 3
    assert server.count("/flaky/b?fails=9&code=502") == 3


def test_404_recorded_once_with_one_attempt(server: MediaServer, tmp_path: Path) -> None:
    url = server.url("img2.test", "/status/x?code=404")
    (result,) = fetch_all(tmp_path, config(), [url])
    assert (result.error, result.http_status, result.attempts) == ("http 404", 404, 1)
    assert server.count("/status/x?code=404") == 1
    assert result.fetched_at.endswith("Z") and not result.path


# --- limits -------------------------------------------------------------------------------


def test_hanging_server_is_cut_by_the_timeouts(server: MediaServer, tmp_path: Path) -> None:
    urls = [server.url("img1.test", "/hang/read"), server.url("img2.test", "/hang/total")]
    cfgs = [config(retries=0, read_timeout=0.4), config(retries=0, total_timeout=0.4)]
    results = [fetch_all(tmp_path, c, [u])[0] for c, u in zip(cfgs, urls, strict=True)]
    assert results[0].error == "timeout (read)"
    assert results[1].error == "timeout (total 0.4s)"


def test_endless_body_is_cut_at_max_bytes(server: MediaServer, tmp_path: Path) -> None:
    urls = [server.url("img1.test", "/endless/x"), server.url("img1.test", "/big/x?n=300000")]
    results = fetch_all(tmp_path, config(max_bytes=200_000), urls)
    assert results[0].error == "too large (> 200000 bytes)"
    assert results[1].error.startswith("too large (Content-Length 300000")
    assert media_files(tmp_path) == [] and list((tmp_path / ".tmp").glob("*.part")) == []


def test_responses_without_the_file_are_errors(server: MediaServer, tmp_path: Path) -> None:
    """204, 205 and 206 (no range is ever asked for), and a 200 with an empty body, store
    nothing: each is an error saying why, not a success with an empty or partial file."""
    urls = {
        "http 204 (no content)": server.url("img1.test", "/empty/a?code=204"),
        "http 206 (partial content, though no range was asked for)":
            server.url("img1.test", "/partial/a"),
        "empty body": server.url("img1.test", "/empty/b?code=200"),
    }
    results = fetch_all(tmp_path, config(), [*urls.values(), "data:image/png;base64,"])
    assert [r.error for r in results] == [*urls, "empty body"]
    assert [r.attempts for r in results[:3]] == [1, 1, 1]  # not retried
    assert not (tmp_path / "media").exists() or media_files(tmp_path) == []


def test_too_many_redirects(server: MediaServer, tmp_path: Path) -> None:
    url = server.url("img1.test", "/redirect/loop?to=/redirect/loop2%3Fto%3D/img/end")
    (ok,) = fetch_all(tmp_path, config(), [url])
    assert ok.ok and ok.attempts == 3 and ok.final_url.endswith("/img/end")
    (bad,) = fetch_all(tmp_path, config(max_redirects=1), [url])
    assert bad.error == "too many redirects (> 1)"


# --- safety -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "refused: link-local address"),
        ("http://10.0.0.1/", "refused: private address 10.0.0.1"),
        ("http://[::ffff:10.0.0.1]/", "refused: ipv4-mapped"),
        ("file:///etc/passwd", "refused: scheme 'file'"),
        ("http://localhost:{port}/img/private", "refused: localhost resolves to loopback"),
    ],
)
def test_redirect_to_a_private_address_is_refused_before_connecting(
    server: MediaServer, tmp_path: Path, target: str, reason: str
) -> None:
    target = target.format(port=server.port)
    url = server.url("img2.test", "/redirect/p?to=" + target.replace("?", "%3F"))
    trace, seen = guard()
    (result,) = fetch_all(tmp_path, config(), [url], trace=trace)
    assert result.error.startswith("redirect " + reason) or result.error.startswith(reason)
    assert result.final_url.startswith(target.split("[")[0][:12])
    assert all(u.startswith("http://img2.test") or "localhost" in u for u in seen)
    assert not any(h.path == "/img/private" for h in server.hits)


def test_a_name_resolving_to_loopback_is_refused_by_default(
    server: MediaServer, tmp_path: Path
) -> None:
    url = f"http://localhost:{server.port}/img/dns-private"
    (result,) = fetch_all(tmp_path, FetchConfig(retries=0), [url])
    assert result.error == "refused: localhost resolves to loopback address 127.0.0.1"
    assert result.attempts == 1 and not any("dns-private" in h.path for h in server.hits)
    (allowed,) = fetch_all(tmp_path, FetchConfig(allow_private_networks=True), [url])
    assert allowed.ok


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://img1.test/x", "javascript:alert(1)", "gopher://x/",
            "http://127.0.0.1:1/", "http://[::1]:1/", "http://2130706433:1/"]
)
def test_other_schemes_and_literal_private_addresses_are_refused(
    tmp_path: Path, url: str
) -> None:
    (result,) = fetch_all(tmp_path, FetchConfig(), [url])
    assert result.error.startswith("refused:") and result.attempts == 0


# --- storage ------------------------------------------------------------------------------


def test_identical_bytes_are_stored_once(server: MediaServer, tmp_path: Path) -> None:
    urls = [server.url("img1.test", "/same/a"), server.url("img2.test", "/same/b")]
    a, b = fetch_all(tmp_path, config(), urls)
    assert a.ok and b.ok and a.path == b.path and a.sha256 == b.sha256
    assert a.path.startswith(f"media/{a.sha256[:2]}/{a.sha256[2:4]}/") and a.path.endswith(".jpg")
    assert media_files(tmp_path) == [tmp_path / a.path]
    assert a.mimetype == "image/jpeg" and a.bytes == len(JPEG + b"identical")


def test_template_fields_cannot_escape_the_root(server: MediaServer, tmp_path: Path) -> None:
    cfg = config(filename_template="{platform}/{post_id}_{position}.{ext}",
                 folder_strategy="flat")
    meta = {"platform": "../../..", "post_id": "/etc/passwd", "position": "..\x00"}

    async def go() -> FetchResult:
        async with Fetcher(cfg, tmp_path / "root") as f:
            return await f.fetch(server.url("img1.test", "/img/escape"), meta)

    result = asyncio.run(go())
    assert result.ok
    stored = (tmp_path / "root" / result.path).resolve()
    assert stored.is_relative_to((tmp_path / "root").resolve()) and stored.is_file()
    assert ".." not in result.path.split("/")


def test_compress_and_media_type_filter(server: MediaServer, tmp_path: Path) -> None:
    cfg = config(compress=True, mime_types=frozenset({"image"}))
    img, page = fetch_all(tmp_path, cfg, [server.url("img1.test", "/img/gz"),
                                          server.url("img1.test", "/text/page")])
    assert img.path.endswith(".jpg.gz")
    assert gzip.decompress((tmp_path / img.path).read_bytes()) == JPEG + b"/img/gz"
    assert page.error == "unwanted media type text/html" and not page.path


def test_data_urls_are_decoded_and_capped(tmp_path: Path) -> None:
    import base64

    b64 = "data:image/jpeg;base64," + base64.b64encode(JPEG + b"data").decode()
    pct = "data:,hello%20world"
    big = "data:;base64," + base64.b64encode(b"x" * 5000).decode()
    r1, r2, r3 = fetch_all(tmp_path, FetchConfig(max_bytes=4096), [b64, pct, big])
    assert r1.ok and r1.mimetype == "image/jpeg" and r1.attempts == 0
    assert (tmp_path / r1.path).read_bytes() == JPEG + b"data"
    assert (tmp_path / r2.path).read_bytes() == b"hello world"
    assert r3.error == "too large (> 4096 bytes)"


# --- the synchronous service and the ledger -----------------------------------------------


def test_service_bounds_work_and_ledger_prevents_refetch(
    server: MediaServer, tmp_path: Path
) -> None:
    urls = [server.url("img2.test", f"/img/ledger{i}") for i in range(5)]
    urls.append(server.url("img2.test", "/status/ledger?code=410"))
    with FetchService(tmp_path, config(), max_pending=4) as svc:
        results: list[tuple[str, FetchResult]] = []
        backlog = list(enumerate(urls))
        deadline = time.monotonic() + 20
        while (backlog or svc.pending()) and time.monotonic() < deadline:
            while backlog and svc.capacity() > 0:
                i, u = backlog.pop(0)
                svc.submit(str(i), u, {"position": i})
            assert svc.pending() <= 4
            results += svc.harvest()
            time.sleep(0.01)
        results += svc.drain(5)
    assert sorted(j for j, _ in results) == [str(i) for i in range(6)]
    assert all(r.attempts == 1 for _, r in results)
    before = sum(1 for h in server.hits if "ledger" in h.path)
    assert before == 6

    with FetchService(tmp_path, config()) as svc:  # a restart: a new service, same root
        for i, u in enumerate(urls):
            svc.submit(str(i), u, {})
        again = dict(svc.drain(10))
    assert all(again[str(i)].attempts == 0 and again[str(i)].ok for i in range(5))
    assert again["5"].attempts == 1 and again["5"].error == "http 410"  # failures retried
    assert sum(1 for h in server.hits if "ledger" in h.path) == before + 1


def test_a_local_write_refused_stops_the_service_and_leaves_the_job_pending(
    server: MediaServer, tmp_path: Path
) -> None:
    """Our disk refusing the file (here ``media`` is a file, not a folder) is no fate of the
    URL: the engine raises it instead of a "failed" result, the service hands it to its
    caller, and the dataflow's operator stops with the job still pending in its snapshot
    (fetched again at restart), no media row written."""
    from connectors.fetch.store import LocalStorageError
    from flows.media import FetchLogic, MediaJob, _to_tuple

    (tmp_path / "media").write_text("not a folder")
    url = server.url("img1.test", "/img/local-refused")
    with pytest.raises(LocalStorageError) as info:
        fetch_all(tmp_path, config(), [url])
    assert info.value.errno == errno.ENOTDIR and "media" in str(info.value)

    with FetchService(tmp_path, config()) as svc:
        svc.submit("1", url, {})
        with pytest.raises(LocalStorageError):
            svc.drain(10)
        assert svc.pending() == 0

    data = tmp_path / "data"
    row = {"post_id": "1", "platform": "twitter", "position": 0, "type": "photo", "url": url}
    job = MediaJob("twitter", 0, row)
    logic = FetchLogic(data, config(), None, lambda: FetchService(tmp_path, config()))
    logic.on_batch([job])
    deadline = time.monotonic() + 10
    with pytest.raises(LocalStorageError):
        while time.monotonic() < deadline:
            logic.on_notify()
            time.sleep(0.02)
    assert [tuple(t) for t in logic.snapshot().window] == [tuple(_to_tuple(job))]
    assert not any(p.is_file() for p in data.rglob("*"))  # no media row, failed or not
    assert not list((tmp_path / ".tmp").glob("*.part"))  # the temp file went too
    logic.service.close()


def test_a_ledger_hit_obeys_this_runs_type_and_size_limits(
    server: MediaServer, tmp_path: Path
) -> None:
    """A URL stored by an earlier run is refused, as a fresh fetch would refuse it, when
    this run's --mime-types or --max-bytes exclude it; without a request either way."""
    url = server.url("img2.test", "/img/ledger-recheck")
    ledger = FetchLedger.in_root(tmp_path)
    (first,) = fetch_all(tmp_path, config(), [url], ledger)
    assert first.ok and first.mimetype == "image/jpeg" and first.attempts == 1
    cases = {
        "unwanted media type image/jpeg": config(mime_types=frozenset({"video"})),
        f"too large (> {first.bytes - 1} bytes)": config(max_bytes=first.bytes - 1),
        "": config(mime_types=frozenset({"image"}), max_bytes=first.bytes),
    }
    for error, cfg in cases.items():
        (hit,) = fetch_all(tmp_path, cfg, [url], ledger)
        assert (hit.error, hit.attempts) == (error, 0)
        assert (hit.path, hit.sha256) == (("", "") if error else (first.path, first.sha256))
    assert server.count("/img/ledger-recheck") == 1
    ledger.close()


def test_stale_partial_downloads_are_removed_at_start(tmp_path: Path) -> None:
    """A kill leaves ``.tmp/<uuid>.part`` files: the next engine to start on the folder
    removes them, and only them; never while another engine uses the folder (its parts
    may be downloads under way)."""
    tmp = tmp_path / ".tmp"
    tmp.mkdir()
    stale = tmp / f"{'a' * 32}.part"
    stale.write_bytes(b"half a file")
    others = [tmp / "notes.txt", tmp / "short.part", tmp_path / f"{'b' * 32}.part"]
    for path in others:
        path.write_text("not ours")

    async def go() -> None:
        async with Fetcher(config(), tmp_path):
            assert not stale.exists() and all(p.exists() for p in others)
            live = tmp / f"{'c' * 32}.part"
            live.write_bytes(b"a download under way")
            async with Fetcher(config(), tmp_path):  # another engine on the same folder
                assert live.exists()
        async with Fetcher(config(), tmp_path):  # alone again: what is there is stale
            assert not live.exists()

    asyncio.run(asyncio.wait_for(go(), 20))
    assert all(p.exists() for p in others)
