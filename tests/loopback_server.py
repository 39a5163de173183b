"""Loopback HTTP servers that judge the fetch engine where politeness matters: at the server.

The fetch tests and ``benchmarks/fetch.py`` run an aiohttp app in a process of their own on
several loopback addresses, one per pretend host, and measure when requests arrive. These
servers are instruments, never services, so only loopback addresses may be bound.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import multiprocessing
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from aiohttp import web, web_protocol

from connectors.collect.demo_media import body_for


def stamp_arrivals(arrivals: dict[int, float]) -> None:
    """Record when each request reached the server: for the first request of a connection,
    when the connection was accepted (the client's first contact), for the next ones, when
    their bytes came in; both earlier and steadier than the start of the handler.

    ``arrivals`` maps ``id(request.protocol)`` to that moment (``time.monotonic()``). This
    patches aiohttp for the whole process, so call it only in the server's own process.
    """
    made = web_protocol.RequestHandler.connection_made
    received = web_protocol.RequestHandler.data_received
    fresh: set[int] = set()

    def connection_made(self: web_protocol.RequestHandler, transport: Any) -> None:
        arrivals[id(self)] = time.monotonic()
        fresh.add(id(self))
        made(self, transport)

    def data_received(self: web_protocol.RequestHandler, data: bytes) -> None:
        if id(self) in fresh:
            fresh.discard(id(self))
        else:
            arrivals[id(self)] = time.monotonic()
        received(self, data)

    web_protocol.RequestHandler.connection_made = connection_made  # type: ignore[method-assign]
    web_protocol.RequestHandler.data_received = data_received  # type: ignore[method-assign]


async def serve_on_loopback(runner: web.AppRunner, ips: Sequence[str], backlog: int = 128) -> int:
    """Serve ``runner`` on every address of ``ips`` at one port (a free one of the first
    address) and return that port: one port for all lets a URL name its host alone.

    Raises ValueError before binding anything if an address is not loopback.
    """
    for ip in ips:
        if not ipaddress.ip_address(ip).is_loopback:
            raise ValueError(f"not a loopback address: {ip}")
    first = web.TCPSite(runner, ips[0], 0, backlog=backlog)
    await first.start()
    port: int = first._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    for ip in ips[1:]:
        await web.TCPSite(runner, ip, port, backlog=backlog).start()
    return port


def tightest_window(starts: Sequence[float], throttle: float, window: int = 4) -> float:
    """How far the closest run of ``window`` + 1 request starts falls short of being
    ``window`` × ``throttle`` long (≤ 0 when every run is long enough).

    A polite engine spaces every two starts by T; what a server sees also carries the
    scheduling delay of its own process on a loaded 2-core machine, which can stamp one
    request late (tens of ms) and so make one gap look short. Judged over runs of several
    gaps, that delay counts once, while an engine that skips its spacing, even now and then
    in a busy queue, still falls short by a gap's worth.
    """
    ordered = sorted(starts)
    w = min(window, len(ordered) - 1)
    if w < 1:
        return 0.0
    return max(w * throttle - (b - a) for a, b in zip(ordered, ordered[w:], strict=False))


LOG_PATH = "/__log__"  # the media server's own record, read by the test over HTTP


def _serve_media(conn: Connection, latency: float) -> None:
    """The media server's process: demo media on 127.0.0.1 and 127.0.0.2, each request's
    host, arrival and end recorded (arrival as :func:`stamp_arrivals` sees it)."""
    arrivals: dict[int, float] = {}
    stamp_arrivals(arrivals)
    log: list[tuple[str, float, float]] = []

    async def handle(request: web.Request) -> web.Response:
        t0 = arrivals.get(id(request.protocol), time.monotonic())
        if request.path == LOG_PATH:
            return web.json_response(log)
        await asyncio.sleep(latency)
        data, ctype = body_for(request.path)
        log.append((request.host.split(":")[0], t0, time.monotonic()))
        return web.Response(body=data, content_type=ctype)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        # The same port on a second loopback address: a second host for the politeness keys.
        conn.send(await serve_on_loopback(runner, ["127.0.0.1", "127.0.0.2"]))
        await asyncio.Event().wait()  # until the test terminates the process

    asyncio.run(main())


class MediaServer:
    """Loopback media server; records each request's host, arrival and end.

    It runs in a process of its own: in the test's process it shared the GIL with the
    dataflow and the fetch engine under test, and a request could wait there for tens of
    milliseconds before it was stamped, which made two starts T apart look closer than T.
    Times are ``time.monotonic()``, one clock for every process of the machine.
    """

    def __init__(self, latency: float = 0.03):
        self.latency = latency
        self.port = 0
        self._final: list[tuple[str, float, float]] | None = None
        ctx = multiprocessing.get_context("spawn")
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_serve_media, args=(send, latency), daemon=True)

    @property
    def log(self) -> list[tuple[str, float, float]]:
        """Every request served so far (after :meth:`stop`, every request served)."""
        if self._final is not None:
            return self._final
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", LOG_PATH)
            rows = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        return [(host, start, end) for host, start, end in rows]

    def start(self) -> MediaServer:
        self._proc.start()
        if not self._recv.poll(60):
            raise RuntimeError("the media server did not start")
        self.port = self._recv.recv()
        return self

    def stop(self) -> None:
        if self._final is None and self._proc.is_alive():
            self._final = self.log
        self._proc.terminate()
        self._proc.join(10)
