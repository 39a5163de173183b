"""Loopback HTTP servers that judge the fetch engine where politeness matters: at the server.

The fetch tests and ``benchmarks/fetch.py`` run an aiohttp app in a process of their own on
several loopback addresses, one per pretend host, and measure when requests arrive. These
servers are instruments, never services, so only loopback addresses may be bound.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from collections.abc import Sequence
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


class MediaServer:
    """Loopback server on 127.0.0.1; records each request's host, start and end."""

    def __init__(self, latency: float = 0.03):
        self.latency = latency
        self.log: list[tuple[str, float, float]] = []
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        t0 = time.monotonic()
        await asyncio.sleep(self.latency)
        data, ctype = body_for(request.path)
        self.log.append((request.host.split(":")[0], t0, time.monotonic()))
        return web.Response(body=data, content_type=ctype)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        # The same port on a second loopback address: a second host for the politeness keys.
        self.port = loop.run_until_complete(serve_on_loopback(runner, ["127.0.0.1", "127.0.0.2"]))
        self._ready.set()
        loop.run_forever()

    def start(self) -> MediaServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
