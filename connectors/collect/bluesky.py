"""Bluesky through Jetstream: post records as JSON over a websocket, resumable by cursor.

Jetstream's cursor is a time in microseconds (``time_us``), the same on every instance. It
only roughly orders events, so a reconnection asks for a little before the newest event seen
(``--rewind``) and leaves the repeats to the dataflow's dedupe. The cursor is written (with
:class:`~connectors.collect.live.Checkpoint`) only after a flush, so a crash repeats posts but never
skips them. Jetstream filters by collection and DID only; hashtags and keywords are matched
here, on the record's text, facets and tags.
"""

from __future__ import annotations

import argparse
import logging
import unicodedata
from pathlib import Path
from typing import Any

import aiohttp

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
from shoal.formats import bluesky
from shoal.formats._json_records import Record
from shoal.logs import event
from shoal.model import DeadLetter, RawPost
from shoal.names import hashtags_in_text
from shoal.normalise.bluesky import POST_COLLECTION
from shoal.options import finite_float

log = logging.getLogger("shoal.collect")

DEFAULT_URL = "wss://jetstream2.us-east.bsky.network/subscribe"
MAX_FRAME = 16 << 20
# A frame over MAX_FRAME is read again once under this limit: Jetstream replays from the
# cursor, so without it the same frame closed every reconnection, forever.
LARGE_FRAME = 256 << 20
KIND = "bluesky"


class PostFilter:
    """``--hashtag`` / ``--keyword``: a post passes if any of them matches (none: all pass)."""

    def __init__(self, hashtags: list[str], keywords: list[str]) -> None:
        self.tags = {_fold(t.lstrip("#")) for t in hashtags if t.lstrip("#")}
        self.words = [k.casefold() for k in keywords if k]

    def __bool__(self) -> bool:
        return bool(self.tags or self.words)

    def accepts(self, event_: dict[str, Any]) -> bool:
        if not self:
            return True
        commit = event_.get("commit")
        record = commit.get("record") if isinstance(commit, dict) else None
        if not isinstance(record, dict):
            return False
        text = record.get("text")
        folded = text.casefold() if isinstance(text, str) else ""
        # Hashtags in the text read whole (a regex ending at \w stopped at a vowel sign:
        # --hashtag भ took #भारत), in NFC, as the collectors and normalisers read them.
        if self.tags and (self.tags & _record_tags(record)
                          or self.tags & {_fold(t) for t in hashtags_in_text(folded)}):
            return True
        return any(w in folded for w in self.words)


def _fold(tag: str) -> str:
    """A hashtag as compared: NFC, case-folded."""
    return unicodedata.normalize("NFC", tag).casefold()


def _record_tags(record: dict[str, Any]) -> set[str]:
    tags = {_fold(t) for t in record.get("tags") or () if isinstance(t, str)}
    for facet in record.get("facets") or ():
        for feature in facet.get("features") or () if isinstance(facet, dict) else ():
            if (isinstance(feature, dict) and str(feature.get("$type", "")).endswith("#tag")
                    and isinstance(feature.get("tag"), str)):
                tags.add(_fold(feature["tag"]))
    return tags


class Jetstream:
    """One subscription: connect, read frames, publish posts, reconnect from the cursor."""

    def __init__(self, args: argparse.Namespace, outlet: Outlet) -> None:
        state = load_state(args.state)
        cursor = state.get("cursor")
        self.cursor: int | None = cursor if isinstance(cursor, int) else None
        self.args = args
        self.outlet = outlet
        self.filter = PostFilter(args.hashtag or [], args.keyword or [])
        self.backoff = Backoff.from_args(args)
        self.rewind_us = int(args.rewind * 1_000_000)
        self.connection = 0
        self.frames = 0
        self.large = False  # the next connection reads one frame over MAX_FRAME
        self.checkpoint = Checkpoint(args.state, outlet.publisher, args.save_every, self.snapshot)

    def snapshot(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "url": self.args.url}

    def position(self) -> dict[str, Any]:
        return {"connection": self.connection, "cursor": self.cursor}

    def params(self) -> list[tuple[str, str]]:
        out = [("wantedCollections", POST_COLLECTION)]
        out += [("wantedDids", did) for did in self.args.did or ()]
        if self.cursor is not None:
            out.append(("cursor", str(max(0, self.cursor - self.rewind_us))))
        return out

    async def run(self) -> None:
        headers = {"User-Agent": f"shoal/{__version__}"}
        await keep_connected(KIND, lambda: aiohttp.ClientSession(headers=headers),
                             self.connect_once, self.backoff, self.checkpoint, self.position)

    async def connect_once(self, session: aiohttp.ClientSession) -> None:
        self.connection += 1
        params = self.params()
        limit = LARGE_FRAME if self.large else MAX_FRAME
        try:
            async with session.ws_connect(self.args.url, params=params, heartbeat=30.0,
                                          max_msg_size=limit) as ws:
                event(log, "connected", kind=KIND, connection=self.connection,
                      cursor=dict(params).get("cursor"))
                async for msg in ws:
                    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        self.large = False  # read: the next connection has the usual limit
                        self.handle(msg.data)
                    elif msg.type == aiohttp.WSMsgType.ERROR:
                        # The error is the message's data; ws.exception() may be unset.
                        exc = msg.data if isinstance(msg.data, BaseException) else ws.exception()
                        self.too_large(exc, limit)
                        warn("websocket error", kind=KIND, error=str(exc))
                        break
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status < 500 and exc.status not in (408, 429):
                raise ConnectorError(f"Jetstream refused the subscription ({exc.status}: "
                                     f"{exc.message}); check --url and --did") from None
            warn("connection refused", kind=KIND, status=exc.status)
            self.backoff.hold(exc.headers.get("Retry-After") if exc.headers else None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            warn("connection failed", kind=KIND, **failure(exc, self.args.url))

    def too_large(self, exc: BaseException | None, limit: int) -> None:
        """After a frame over ``limit``: the reconnection (which Jetstream starts with that
        frame again) reads it under LARGE_FRAME, so it becomes a post or, too large for
        Kafka, a dead letter with its head; a frame over that too is the collector's end,
        in one line, rather than a reconnection to the same frame every backoff."""
        if not (isinstance(exc, aiohttp.WebSocketError)
                and exc.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG):
            return
        if limit >= LARGE_FRAME:
            raise ConnectorError(f"Jetstream sent a frame over {LARGE_FRAME} bytes after "
                                 f"cursor {self.cursor}; start again with a later cursor "
                                 "in --state to go past it")
        warn("frame over the limit; reading it again with a larger one", kind=KIND,
             limit=limit, cursor=self.cursor)
        self.large = True

    def handle(self, data: str | bytes) -> None:
        self.frames += 1
        self.backoff.reset()
        source = f"jetstream:{self.connection}:{self.frames}"
        raw = data.encode() if isinstance(data, str) else data
        value = json_or_dead_letter(raw, "frame", source, bluesky.NAME)
        if isinstance(value, DeadLetter):
            self.outlet.emit([value])
            return
        if isinstance(value, dict):
            time_us = value.get("time_us")
            if isinstance(time_us, int) and not isinstance(time_us, bool):
                self.cursor = max(self.cursor or 0, time_us)
        found = bluesky._one(Record(source, value, raw))
        if isinstance(found, RawPost) and not self.filter.accepts(found.payload):
            self.outlet.filtered += 1
            return
        self.outlet.emit([found])


def run(args: argparse.Namespace) -> int:
    def preflight() -> None:
        load_state(args.state)

    async def body(outlet: Outlet) -> None:
        await Jetstream(args, outlet).run()

    return run_async(args, KIND, body, preflight=preflight)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bluesky", help="Bluesky posts from a Jetstream instance, resumable")
    p.add_argument("--url", default=DEFAULT_URL,
                   help="Jetstream subscribe URL (default %(default)s)")
    p.add_argument("--did", action="append", metavar="DID",
                   help="only this author's posts (repeatable; filtered by Jetstream)")
    p.add_argument("--hashtag", action="append", metavar="TAG",
                   help="only posts with this hashtag (repeatable; filtered here)")
    p.add_argument("--keyword", action="append", metavar="WORD",
                   help="only posts whose text contains this (repeatable; filtered here)")
    p.add_argument("--state", type=Path, default=None, help="JSON file keeping the cursor")
    p.add_argument("--save-every", type=finite_float, default=5.0, metavar="SECONDS",
                   help="how often the cursor is saved (default 5)")
    p.add_argument("--rewind", type=finite_float, default=5.0, metavar="SECONDS",
                   help="a reconnection resumes this long before the cursor (default 5)")
    add_common_options(p)
    p.set_defaults(live_run=run)
