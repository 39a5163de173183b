"""Mastodon: a server's public or hashtag stream over server-sent events, with REST backfill.

The streaming API has no cursor: what is posted while we are disconnected never arrives. So
the newest status id seen is kept (in ``--state``, written after a flush like every resume
point), and after each (re)connection the matching timeline is read with ``min_id`` for what
was missed. The stream is opened first and read after the backfill, so nothing falls between
the two; the overlap is left to the dataflow's dedupe. A backfill the server answers "not
now" (429, 5xx) drops the connection and is tried again after the backoff: reading the stream
without it would move the saved id past the gap. Ids are the server's own, so a state file
belongs to one server.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from connectors.collect.live import (
    Backoff,
    Checkpoint,
    ConnectorError,
    Outlet,
    add_common_options,
    failure,
    json_or_dead_letter,
    keep_connected,
    load_state,
    run_async,
    warn,
)
from shoal import __version__
from shoal.formats import mastodon
from shoal.formats._json_records import Record
from shoal.logs import event
from shoal.model import Control, DeadLetter, RawPost
from shoal.options import finite_float

log = logging.getLogger("shoal.collect")

KIND = "mastodon"
TOKEN_ENV = "MASTODON_TOKEN"
PAGE_LIMIT = 40  # the API's maximum for timelines
MAX_LINE = 16 << 20
STATUS_EVENTS = frozenset({"update", "status.update"})


def base_url(host: str) -> str:
    """``mastodon.social`` -> ``https://mastodon.social``; a URL is kept (tests use http)."""
    host = host.strip().rstrip("/")
    return host if "://" in host else f"https://{host}"


def id_order(value: str) -> tuple[int, str]:
    """Mastodon ids are decimal strings of growing length; other servers' are fixed-length."""
    return len(value), value


def _status_key(status: Any) -> str | None:
    sid = status.get("id") if isinstance(status, dict) else None
    if isinstance(sid, int) and not isinstance(sid, bool):
        return str(sid)
    return sid if isinstance(sid, str) and sid else None


def _has_media(status: dict[str, Any]) -> bool:
    if status.get("media_attachments"):
        return True
    reblog = status.get("reblog")
    return isinstance(reblog, dict) and bool(reblog.get("media_attachments"))


async def sse_events(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str, bytes]]:
    """``(event, data)`` pairs of a text/event-stream; ``:`` heartbeat comments are skipped."""
    name, data = "", list[bytes]()
    while True:
        line = await content.readline(max_line_length=MAX_LINE)
        if not line:
            return  # an event not ended by a blank line is incomplete: dropped, as the spec says
        line = line.rstrip(b"\r\n")
        if not line:
            if data:
                yield name or "message", b"\n".join(data)
            name, data = "", []
        elif not line.startswith(b":"):
            field, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if field == b"event":
                name = value.decode("utf-8", "replace")
            elif field == b"data":
                data.append(value)


def access_token(args: argparse.Namespace) -> str | None:
    """``[collectors] mastodon_token`` (file, SHOAL_ or MASTODON_TOKEN environment,
    ``--token-file``, ``--token``), else MASTODON_TOKEN; None when there is none."""
    settings = getattr(args, "settings", None)
    configured = settings.collectors.mastodon_token if settings is not None else ""
    return configured.strip() or os.environ.get(TOKEN_ENV, "").strip() or None


def retryable(status: int) -> bool:
    """Whether an HTTP status says "not now" rather than "never": asking later may work."""
    return status in (408, 429) or status >= 500


def checked_state(args: argparse.Namespace) -> dict[str, Any]:
    state = load_state(args.state)
    if state.get("server") not in (None, base_url(args.host)):
        raise ConnectorError(f"state file {args.state} is for {state['server']}; status ids "
                             "belong to one server, use another --state")
    return state


class MastodonStream:
    """One server's stream: connect, backfill what was missed, read events, reconnect."""

    def __init__(self, args: argparse.Namespace, outlet: Outlet) -> None:
        self.args = args
        self.outlet = outlet
        self.server = base_url(args.host)
        self.streaming = base_url(args.streaming_url) if args.streaming_url else self.server
        state = checked_state(args)
        last = state.get("last_id")
        self.last_id: str | None = str(last) if last is not None else None
        self.token = access_token(args)
        self.backoff = Backoff.from_args(args)
        self.connection = 0
        self.events = 0
        self.checkpoint = Checkpoint(args.state, outlet.publisher, args.save_every, self.snapshot)
        media = {"only_media": "true"} if args.only_media else {}
        if args.hashtag:
            tag = args.hashtag.lstrip("#")
            self.stream_path, self.stream_params = "/api/v1/streaming/hashtag", {"tag": tag}
            self.timeline_path = f"/api/v1/timelines/tag/{quote(tag, safe='')}"
        else:
            self.stream_path, self.stream_params = "/api/v1/streaming/public", dict(media)
            self.timeline_path = "/api/v1/timelines/public"
        self.timeline_params = dict(media)

    def snapshot(self) -> dict[str, Any]:
        return {"server": self.server, "last_id": self.last_id}

    def position(self) -> dict[str, Any]:
        return {"connection": self.connection, "last_id": self.last_id}

    async def run(self) -> None:
        headers = {"User-Agent": f"shoal/{__version__}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        timeout = aiohttp.ClientTimeout(total=None, connect=20, sock_read=self.args.read_timeout)
        await keep_connected(KIND, lambda: aiohttp.ClientSession(headers=headers, timeout=timeout),
                             self.connect_once, self.backoff, self.checkpoint, self.position)

    def _refused(self, status: int, what: str) -> ConnectorError:
        if status in (401, 403):
            why = ("the access token was refused" if self.token else
                   f"it needs an access token: set {TOKEN_ENV} or pass --token-file")
            return ConnectorError(f"{self.server} refused the {what} ({status}): {why}")
        return ConnectorError(f"{self.server} answered {status} to the {what}"
                              + (" (is --streaming-url needed?)" if what == "stream" else ""))

    async def connect_once(self, session: aiohttp.ClientSession) -> None:
        self.connection += 1
        url = self.streaming + self.stream_path
        try:
            async with session.get(url, params=self.stream_params,
                                   headers={"Accept": "text/event-stream"}) as resp:
                if resp.status != 200:
                    if not retryable(resp.status):
                        raise self._refused(resp.status, "stream")
                    warn("stream unavailable", kind=KIND, status=resp.status)
                    self.backoff.hold(resp.headers.get("Retry-After"))
                    return
                event(log, "stream connected", kind=KIND, connection=self.connection,
                      last_id=self.last_id)
                if self.last_id is not None and not await self.backfill(session):
                    return  # the stream would move the position past the gap: later
                async for name, data in sse_events(resp.content):
                    self.handle(name, data)
                warn("stream ended by the server", kind=KIND, connection=self.connection)
        except (aiohttp.ClientError, TimeoutError, HttpProcessingError) as exc:
            # HttpProcessingError: a line longer than MAX_LINE (LineTooLong)
            warn("stream failed", kind=KIND, **failure(exc, url))

    async def backfill(self, session: aiohttp.ClientSession) -> bool:
        """Page forward from the last id seen with ``min_id`` until the timeline is exhausted.

        False when the server said "not now" (429, 408, 5xx): the caller drops the
        connection and backfills again after the backoff. Reading the stream instead would
        move ``last_id`` past the statuses still missing, and they would never be asked for.
        """
        start = min_id = self.last_id
        assert min_id is not None
        pages = found = 0
        while pages < self.args.backfill_pages:
            params = {**self.timeline_params, "min_id": min_id, "limit": str(PAGE_LIMIT)}
            async with session.get(self.server + self.timeline_path, params=params) as resp:
                if resp.status != 200:
                    if resp.status in (401, 403):
                        raise self._refused(resp.status, "timeline")
                    warn("backfill failed", kind=KIND, status=resp.status, min_id=min_id)
                    self.backoff.hold(resp.headers.get("Retry-After"))
                    return not retryable(resp.status)
                body = await resp.read()
            pages += 1
            source = f"backfill:{min_id}"
            statuses = json_or_dead_letter(body, "timeline page", source, mastodon.NAME)
            if isinstance(statuses, DeadLetter):
                self.outlet.emit([statuses])
                return True
            if not isinstance(statuses, list) or not statuses:
                break
            for index, status in enumerate(statuses):
                self.status(status, None, f"{source}[{index}]")
            found += len(statuses)
            ids = [k for k in map(_status_key, statuses) if k is not None]
            newest = max(ids, key=id_order, default=None)
            if newest is None or id_order(newest) <= id_order(min_id):
                break
            min_id = newest
        else:
            warn("backfill stopped at --backfill-pages", kind=KIND, pages=pages, min_id=min_id)
        event(log, "backfilled", kind=KIND, since_id=start, statuses=found, pages=pages)
        return True

    def handle(self, name: str, data: bytes) -> None:
        self.events += 1
        self.backoff.reset()
        source = f"stream:{self.connection}:{self.events}"
        if name not in STATUS_EVENTS:
            self.outlet.emit([Control(name, source)])
            return
        value = json_or_dead_letter(data, f"in {name} event", source, mastodon.NAME)
        if isinstance(value, DeadLetter):
            self.outlet.emit([value])
            return
        self.status(value, data, source)

    def status(self, value: Any, raw: bytes | None, source: str) -> None:
        found = mastodon._one(Record(source, value, raw))
        if isinstance(found, RawPost):
            key = _status_key(value)  # seen, even if filtered: the backfill starts after it
            if key is not None and (self.last_id is None
                                    or id_order(key) > id_order(self.last_id)):
                self.last_id = key
            if self.args.only_media and not _has_media(value):
                self.outlet.filtered += 1  # the hashtag stream has no only_media of its own
                return
        self.outlet.emit([found])


def run(args: argparse.Namespace) -> int:
    async def body(outlet: Outlet) -> None:
        await MastodonStream(args, outlet).run()

    return run_async(args, KIND, body, preflight=lambda: checked_state(args))


def add_parser(sub: Any) -> None:
    p = sub.add_parser("mastodon", help="a Mastodon server's public or hashtag stream")
    p.add_argument("host", help="server name (mastodon.social) or base URL")
    p.add_argument("--hashtag", default=None, help="the hashtag stream instead of the public one")
    p.add_argument("--only-media", action="store_true", help="only statuses with media")
    p.add_argument("--streaming-url", default=None,
                   help="base URL of the streaming server when it is not HOST")
    p.add_argument("--state", type=Path, default=None,
                   help="JSON file keeping the last status id, for backfill after a restart")
    p.add_argument("--save-every", type=finite_float, default=5.0, metavar="SECONDS",
                   help="how often the last id is saved (default 5)")
    p.add_argument("--backfill-pages", type=int, default=25,
                   help=f"at most this many pages of {PAGE_LIMIT} per backfill (default 25)")
    p.add_argument("--read-timeout", type=finite_float, default=120.0, metavar="SECONDS",
                   help="reconnect when the stream is silent this long (it sends heartbeats)")
    add_common_options(p)
    p.set_defaults(live_run=run)
