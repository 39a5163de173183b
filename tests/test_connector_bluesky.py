"""bluesky (Jetstream) against a local websocket server replaying real Jetstream events.

The server behaves like Jetstream where it matters: it filters by ``wantedCollections`` and
``wantedDids``, always sends identity/account events, and replays from ``cursor`` in
``time_us`` order. Expected values come straight from the fixture file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from tests import live_helpers as live

JETSTREAM = "bluesky/bluesky-social__jetstream/internal/corpus/testdata/expected_v1.jsonl"
POST = "app.bsky.feed.post"
MALFORMED = '{"did": "did:plc:broken", "time_us": 17'


@pytest.fixture(autouse=True)
def spool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHOAL_SPOOL_DIR", str(tmp_path / "spool"))  # the publisher's outbox


def load_events(fixtures: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (fixtures / JETSTREAM).read_text().splitlines()]


def post_creates(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """at:// URI -> event, for every post create of the file."""
    return {
        f"at://{e['did']}/{POST}/{e['commit']['rkey']}": e
        for e in events
        if e["kind"] == "commit" and e["commit"]["collection"] == POST
        and e["commit"]["operation"] == "create"
    }


class Jetstream:
    """/subscribe: connection ``n`` gets ``script(n)``: ("send", count) | ("bad",) | ("close",)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = sorted(events, key=lambda e: e["time_us"])
        self.connections: list[dict[str, Any]] = []
        self.sent: list[list[int]] = []  # time_us of the events sent, per connection
        self.script: Callable[[int], list[tuple[Any, ...]]] = lambda n: [("send", None)]
        self.connected = threading.Event()
        self.server: live.LocalServer | None = None
        self.app = web.Application()
        self.app.router.add_get("/subscribe", self.subscribe)

    def wanted(self, query: Any) -> list[dict[str, Any]]:
        collections = query.getall("wantedCollections", [])
        dids = set(query.getall("wantedDids", []))
        cursor = int(query.get("cursor", 0))
        return [
            e for e in self.events
            if e["time_us"] >= cursor
            and (not dids or e["did"] in dids)
            and (e["kind"] != "commit" or not collections
                 or e["commit"]["collection"] in collections)
        ]

    async def subscribe(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        q = request.query
        self.connections.append({"collections": q.getall("wantedCollections", []),
                                 "dids": q.getall("wantedDids", []), "cursor": q.get("cursor")})
        self.connected.set()
        sent: list[int] = []
        self.sent.append(sent)
        queue = self.wanted(q)
        for step in self.script(len(self.connections)):
            if step[0] == "send":
                batch, queue = (queue, []) if step[1] is None else (queue[:step[1]],
                                                                    queue[step[1]:])
                for e in batch:
                    await ws.send_str(json.dumps(e))
                    sent.append(e["time_us"])
            elif step[0] == "bad":
                await ws.send_str(MALFORMED)
            elif step[0] == "close":
                await ws.close()
                return ws
        with contextlib.suppress(ConnectionResetError):
            while self.server is not None and not self.server.stopping and not ws.closed:
                with contextlib.suppress(asyncio.TimeoutError):
                    msg = await ws.receive(timeout=0.1)
                    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                        break
        return ws


@pytest.fixture
def jetstream(fixtures: Path) -> Iterator[Jetstream]:
    fake = Jetstream(load_events(fixtures))
    with live.LocalServer(fake.app) as server:
        fake.server = server
        yield fake


def saved_cursor(path: Path) -> int | None:
    try:
        return json.loads(path.read_text()).get("cursor")
    except (OSError, ValueError):
        return None


def bluesky_args(brokers: str, server: Jetstream, name: str, state: Path, *extra: str) -> Any:
    assert server.server is not None
    return live.live_args("bluesky", "--url", f"ws://127.0.0.1:{server.server.port}/subscribe",
                     "--brokers", brokers, "--collector", name, "--state", str(state),
                     "--save-every", "0.1", "--rewind", "0.05",
                     "--backoff-base", "0.05", "--backoff-max", "0.2", *extra)


def test_posts_cursor_disconnect_resume_and_dead_letter(
    fixtures: Path, jetstream: Jetstream, brokers: str, tap: live.KafkaTap, tmp_path: Path,
    debug_logs: Any,
) -> None:
    caplog = debug_logs
    events = load_events(fixtures)
    creates = post_creates(events)
    assert len(creates) == 17
    state = tmp_path / "jetstream.json"
    name = live.collector_name("jet")
    # First connection: 60 events, a broken frame, then the server hangs up.
    jetstream.script = lambda n: ([("send", 60), ("bad",), ("close",)] if n == 1
                                  else [("send", None)])
    newest = max(e["time_us"] for e in jetstream.wanted(_Query({"wantedCollections": POST})))
    args = bluesky_args(brokers, jetstream, name, state)
    with live.sigterm_when(lambda: saved_cursor(state) == newest) as fired:
        assert args.live_run(args) == 0
    assert fired.is_set()

    first, second = jetstream.connections[:2]
    assert first == {"collections": [POST], "dids": [], "cursor": None}
    assert int(second["cursor"]) == max(jetstream.sent[0]) - 50_000  # cursor minus the rewind
    assert saved_cursor(state) == newest

    tap.settle(0.5)
    posts = tap.posts(name)
    assert {p["key"] for p in posts} == {f"bluesky:{uri}" for uri in creates}
    assert all(p["format"] == "bluesky-record" for p in posts)
    by_key = {p["key"]: p["payload"] for p in posts}
    uri, event = next(iter(creates.items()))
    assert by_key[f"bluesky:{uri}"]["commit"]["record"] == event["commit"]["record"]
    dead = tap.dead(name)
    assert len(dead) == 1 and dead[0]["raw"] == MALFORMED and dead[0]["format"] == "bluesky"
    stopped = live.logged(caplog, "collector stopped")[0]
    delete = next(e["time_us"] for e in events
                  if e.get("commit", {}).get("operation") == "delete"
                  and e["commit"]["collection"] == POST)
    times_sent = sum(sent.count(delete) for sent in jetstream.sent)  # the rewind repeats some
    assert stopped["control"]["delete"] == times_sent >= 1
    assert stopped["control"]["identity"] >= 1
    assert not any("Traceback" in line for line in live.log_lines(caplog))

    # A restart resumes from the saved cursor.
    jetstream.connected.clear()
    before = len(jetstream.connections)
    args = bluesky_args(brokers, jetstream, name, state)
    with live.sigterm_when(lambda: len(jetstream.connections) > before and len(jetstream.sent[-1])
                      == len(jetstream.wanted(_Query({"wantedCollections": POST,
                                                      "cursor": str(newest - 50_000)})))):
        assert args.live_run(args) == 0
    assert int(jetstream.connections[before]["cursor"]) == newest - 50_000


class _Query(dict[str, Any]):
    """Enough of a MultiDict for :meth:`Jetstream.wanted` outside a request."""

    def getall(self, key: str, default: list[str]) -> list[str]:
        return [self[key]] if key in self else default


def test_did_hashtag_and_keyword_filters(
    fixtures: Path, jetstream: Jetstream, brokers: str, tap: live.KafkaTap, tmp_path: Path,
    debug_logs: Any,
) -> None:
    creates = post_creates(load_events(fixtures))
    authors = Counter(uri.split("/")[2] for uri in creates)
    busiest = authors.most_common(1)[0][0]  # the one author with three posts
    dids = [busiest, next(a for a in authors if a != busiest)]
    by_did = live.collector_name("did")
    state = tmp_path / "did.json"
    args = bluesky_args(brokers, jetstream, by_did, state, "--did", dids[0], "--did", dids[1])
    with live.sigterm_when(lambda: bool(jetstream.sent) and saved_cursor(state) == max(
            jetstream.sent[0], default=-1)):
        assert args.live_run(args) == 0
    assert jetstream.connections[0]["dids"] == dids

    def matches(e: dict[str, Any]) -> bool:
        record = e["commit"]["record"]
        tags = {f.get("tag", "").casefold() for facet in record.get("facets", [])
                for f in facet["features"]}
        return "indierebellion" in tags or "maga" in record.get("text", "").casefold()

    by_text = live.collector_name("text")
    state = tmp_path / "text.json"
    args = bluesky_args(brokers, jetstream, by_text, state, "--hashtag", "#IndieRebellion",
                        "--keyword", "MAGA")
    with live.sigterm_when(lambda: len(jetstream.sent) == 2 and saved_cursor(state) == max(
            jetstream.sent[1], default=-1)):
        assert args.live_run(args) == 0

    tap.settle(0.5)
    got_did = {p["key"] for p in tap.posts(by_did)}
    assert got_did == {f"bluesky:{u}" for u in creates if u.split("/")[2] in dids}
    assert len(got_did) == 4
    got_text = {p["key"] for p in tap.posts(by_text)}
    assert got_text == {f"bluesky:{u}" for u, e in creates.items() if matches(e)}
    assert len(got_text) == 2
    assert live.logged(debug_logs, "collector stopped")[-1]["filtered"] == 15


def test_a_frame_over_the_limit_is_read_once_not_reconnected_to_forever(
    fixtures: Path, jetstream: Jetstream, brokers: str, tap: live.KafkaTap, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A frame longer than the websocket limit closed the connection; the reconnection
    asked from the same cursor, got the same frame first, and so on forever: nothing after
    it was ever collected, and nothing said why but 'websocket error'. It is now read once
    with a larger limit (a post, or a dead letter when Kafka cannot take it) and the stream
    goes on; one still too large ends the collector in one line."""
    import connectors.collect.bluesky as bluesky_collector

    creates = post_creates(load_events(fixtures))
    sizes = sorted(len(json.dumps(e)) for e in jetstream.events)
    limit = sizes[len(sizes) // 2]  # half the frames are over it
    monkeypatch.setattr(bluesky_collector, "MAX_FRAME", limit)
    monkeypatch.setattr(bluesky_collector, "LARGE_FRAME", sizes[-1] + 1)
    state = tmp_path / "jetstream.json"
    name = live.collector_name("jet")
    newest = max(e["time_us"] for e in jetstream.wanted(_Query({"wantedCollections": POST})))
    args = bluesky_args(brokers, jetstream, name, state)
    with live.sigterm_when(lambda: saved_cursor(state) == newest, timeout=20) as fired:
        assert args.live_run(args) == 0
    assert fired.is_set() and len(jetstream.connections) < 40
    tap.settle(0.5)
    assert {p["key"] for p in tap.posts(name)} == {f"bluesky:{uri}" for uri in creates}

    monkeypatch.setattr(bluesky_collector, "LARGE_FRAME", limit)
    args = bluesky_args(brokers, jetstream, live.collector_name("jet"), tmp_path / "s2.json")
    with live.sigterm_when(lambda: False, timeout=10) as fired:
        assert args.live_run(args) == 2
    assert not fired.is_set()


def test_hashtag_filter_reads_whole_hashtags_of_every_script() -> None:
    """--hashtag भ matched a post tagged #भारत (the regex's end stopped at the vowel sign),
    and --hashtag भारत one tagged #भारती: posts of other hashtags passed the filter. A
    hashtag in the text is read whole, in NFC, as the collectors and normalisers read it."""
    from connectors.collect.bluesky import PostFilter

    def event(text: str) -> dict[str, Any]:
        return {"commit": {"record": {"text": text}}}

    assert PostFilter(["भारत"], []).accepts(event("jai #भारत!"))
    assert not PostFilter(["भारत"], []).accepts(event("#भारती"))
    assert not PostFilter(["भ"], []).accepts(event("#भारत"))
    assert PostFilter(["café"], []).accepts(event("#Cafe\u0301 au lait"))
    assert PostFilter(["#London"], []).accepts(event("#london calling"))
    assert not PostFilter(["london"], []).accepts(event("#londoner"))
