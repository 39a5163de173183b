"""A process-wide resolver override: ``SHOAL_RESOLVE=HOST[:PORT]=IP[:PORT],...``.

instaloader and yt-dlp build their URLs from fixed host names (www.instagram.com,
www.tiktok.com) and offer no base-URL option. To point them at a proxy, a mirror or a test
server, the override answers the process's name lookups for those hosts (like curl's
``--connect-to``), leaving the libraries untouched: TLS still checks the certificate against
the original host name, so a wrong target fails loudly instead of being trusted. Clients
that do their own name resolution (primp, the Rust client under ddgs) are not affected; they
take a proxy instead.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from shoal.errors import UserError
from shoal.logs import event

ENV = "SHOAL_RESOLVE"
log = logging.getLogger("shoal.collect")

Key = tuple[str, int | None]
_installed: dict[Key, tuple[str, int | None]] = {}
_original = socket.getaddrinfo


def _split(part: str, what: str, spec: str) -> tuple[str, int | None]:
    host, sep, port = part.strip().rpartition(":")
    if not sep:
        host, port = part.strip(), ""
    try:
        return host.lower().rstrip("."), int(port) if port else None
    except ValueError:
        raise UserError(f"bad {ENV} entry {spec!r}: {what} port {port!r} is not a number") from None


def parse(spec: str) -> dict[Key, tuple[str, int | None]]:
    """``{(host, port or None): (address, port or None)}``; UserError names a bad entry."""
    table: dict[Key, tuple[str, int | None]] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        left, sep, right = entry.partition("=")
        if not sep or not left or not right:
            raise UserError(f"bad {ENV} entry {entry!r}: use HOST[:PORT]=IP[:PORT]")
        table[_split(left, "host", entry)] = _split(right, "target", entry)
    return table


def _lookup(host: Any, port: Any) -> tuple[str, int | None] | None:
    if not isinstance(host, str) or not _installed:
        return None
    name = host.lower().rstrip(".")
    try:
        number: int | None = int(port) if port is not None else None
    except (TypeError, ValueError):
        number = None
    return _installed.get((name, number)) or _installed.get((name, None))


def _getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    target = _lookup(host, port)
    if target is None:
        return _original(host, port, *args, **kwargs)
    address, new_port = target
    return _original(address, new_port if new_port is not None else port, *args, **kwargs)


def install(spec: str | None = None) -> None:
    """Apply ``spec`` (default: ``$SHOAL_RESOLVE``); nothing when it is empty."""
    spec = os.environ.get(ENV, "") if spec is None else spec
    table = parse(spec)
    if not table:
        return
    _installed.update(table)
    socket.getaddrinfo = _getaddrinfo
    event(log, "resolver override", hosts=sorted(f"{h}:{p or '*'}" for h, p in table))
