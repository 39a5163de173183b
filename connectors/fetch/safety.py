"""The fetch engine's network-safety hooks, so no private address is contacted unless allowed.

Safety is checked three times: on the URL (scheme, literal address; ``shoal.fetch.policy``),
on every DNS answer (the resolver here), and on the socket address just before connecting
(the socket factory here), because each check alone has a way around it.
"""

from __future__ import annotations

import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from connectors.fetch.gate import SENDING
from shoal.fetch.policy import FetchConfig, check_resolved, classify_ip


class UnsafeAddress(OSError):
    """A name or socket address that policy forbids; raised before any packet is sent."""


class GuardedResolver(AbstractResolver):
    """Answers static overrides itself and refuses names that resolve to private addresses,
    so ``evil.example -> 127.0.0.1`` is stopped at the resolver, before connecting."""

    def __init__(self, config: FetchConfig) -> None:
        self._config = config
        self._inner: ThreadedResolver | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        name = host.lower().rstrip(".")
        addr = self._config.resolve.get(name)
        if addr is not None:
            fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
            return [
                {"hostname": host, "host": addr, "port": port, "family": fam, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}
            ]
        if self._inner is None:
            self._inner = ThreadedResolver()
        infos = await self._inner.resolve(host, port, family)
        reason = check_resolved(name, [i["host"] for i in infos], self._config)
        if reason:
            raise UnsafeAddress(reason)
        return infos

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def guarded_socket_factory(config: FetchConfig) -> Any:
    """The last check, on the very address about to be connected: it also covers literal
    addresses, which aiohttp never sends through the resolver."""
    trusted = set(config.resolve.values())

    def factory(addr_info: tuple[Any, ...]) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        ip = str(sockaddr[0]).split("%", 1)[0]
        if not config.allow_private_networks and ip not in trusted:
            verdict = classify_ip(ip)
            if verdict is not None:
                raise UnsafeAddress(f"refused: {verdict} address {ip}")
        sock = _StampedSocket(family=family, type=type_, proto=proto)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    return factory


class _StampedSocket(socket.socket):
    """Tells the gate the moment a request's first bytes went to the kernel: its start.

    The request's task sets ``SENDING``; asyncio writes a fresh request (and a TLS
    handshake) synchronously from that task, so the context reaches here.
    """

    def send(self, data: Any, flags: int = 0) -> int:
        n = super().send(data, flags)
        ticket = SENDING.get()
        if ticket is not None:
            ticket.mark_sent()
        return n


def unsafe_reason(exc: BaseException) -> str:
    """The refusal buried in ``exc`` (aiohttp wraps ours in its own errors), or ""."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, UnsafeAddress) or str(e).startswith("refused:"):
            return str(e)
        todo += [e.__cause__, e.__context__, getattr(e, "os_error", None)]
        todo += list(getattr(e, "exceptions", ()))
    return ""
