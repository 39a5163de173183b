"""mastodon against a local server speaking the streaming API (SSE) and the timelines API.

The statuses are mastodon4j's real hashtag timeline. While the collector is disconnected the
server "publishes" statuses that only the REST backfill (``min_id``) can return; the server
pages them two at a time, newest first, as Mastodon does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests import live_helpers as live

TAG_JSON = "mastodon/sys1yagi__mastodon4j/mastodon4j/src/test/assets/tag.json"
TOKEN = "mstdn-secret-9fQz"  # must never show up in a log line
MALFORMED = b'{"id": 1, "content": "<p>cut'


@pytest.fixture(autouse=True)
def spool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHOAL_SPOOL_DIR", str(tmp_path / "spool"))  # the publisher's outbox


def sse(event: str, data: bytes) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


class Mastodon:
    """Streams ``script(n)`` to the n-th stream connection; timelines show ``visible``."""

    def __init__(self, statuses: list[dict[str, Any]]) -> None:
        self.statuses = sorted(statuses, key=lambda s: s["id"])  # oldest first, as posted
        self.visible = list(self.statuses)
        self.streams: list[dict[str, Any]] = []
        self.timelines: list[dict[str, Any]] = []
        self.script: Callable[[int], list[bytes | None]] = lambda n: []
        self.server: live.LocalServer | None = None
        self.app = web.Application()
        self.app.router.add_get("/api/v1/streaming/{kind}", self.stream)
        self.app.router.add_get("/api/v1/timelines/public", self.timeline)
        self.app.router.add_get("/api/v1/timelines/tag/{tag}", self.timeline)

    @staticmethod
    def authorised(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.streams.append({"path": request.path, "query": dict(request.query)})
        if not self.authorised(request):
            return web.json_response({"error": "This method requires an authenticated user"},
                                     status=401)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionResetError):
            for chunk in self.script(len(self.streams)):
                if chunk is None:  # the server goes away
                    return resp
                await resp.write(chunk)
            while self.server is not None and not self.server.stopping:
                await resp.write(b":thump\n")
                await asyncio.sleep(0.1)
        return resp

    async def timeline(self, request: web.Request) -> web.Response:
        q = request.query
        self.timelines.append({"path": request.path, "query": dict(q)})
        if not self.authorised(request):
            return web.json_response({"error": "unauthorised"}, status=401)
        newer = [s for s in self.visible if s["id"] > int(q["min_id"])]
        page = newer[:min(int(q.get("limit", 20)), 2)]  # the oldest of the newer ones
        return web.json_response(list(reversed(page)))  # newest first


@pytest.fixture
def statuses(fixtures: Path) -> list[dict[str, Any]]:
    return json.loads((fixtures / TAG_JSON).read_text())


@pytest.fixture
def mastodon(statuses: list[dict[str, Any]]) -> Iterator[Mastodon]:
    fake = Mastodon(statuses)
    with live.LocalServer(fake.app) as server:
        fake.server = server
        yield fake


def saved(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def mastodon_args(brokers: str, server: Mastodon, name: str, *extra: str) -> Any:
    assert server.server is not None
    return live.live_args("mastodon", server.server.url, "--brokers", brokers, "--collector", name,
                     "--save-every", "0.1", "--backoff-base", "0.05", "--backoff-max", "0.2",
                     *extra)


def test_stream_disconnect_backfill_and_dead_letter(
    mastodon: Mastodon, brokers: str, tap: live.KafkaTap, tmp_path: Path, debug_logs: Any,
) -> None:
    caplog = debug_logs
    ordered = mastodon.statuses
    assert len(ordered) == 20
    dumps = [json.dumps(s).encode() for s in ordered]
    # Connection 1: ten statuses, a heartbeat, a delete and a broken update, then it drops.
    # Five statuses are posted meanwhile (only the timeline has them); connection 2 streams
    # the last five.
    mastodon.visible = ordered[:15]
    mastodon.script = lambda n: (
        [*(sse("update", d) for d in dumps[:5]), b":thump\n", sse("delete", b"704669"),
         sse("update", MALFORMED), *(sse("update", d) for d in dumps[5:10]), None]
        if n == 1 else [sse("update", d) for d in dumps[15:]]
    )
    state = tmp_path / "mastodon.json"
    name = live.collector_name("mstdn")
    args = mastodon_args(brokers, mastodon, name, "--hashtag", "#mastodon", "--token", TOKEN,
                         "--state", str(state))
    newest = str(ordered[-1]["id"])
    with live.sigterm_when(lambda: saved(state).get("last_id") == newest) as fired:
        assert args.live_run(args) == 0
    assert fired.is_set()

    assert [s["path"] for s in mastodon.streams] == ["/api/v1/streaming/hashtag"] * 2
    assert mastodon.streams[0]["query"] == {"tag": "mastodon"}
    min_ids = [t["query"]["min_id"] for t in mastodon.timelines]
    # From the last status seen before the drop, two at a time, until an empty page.
    assert min_ids == [str(ordered[i]["id"]) for i in (9, 11, 13, 14)]
    assert {t["path"] for t in mastodon.timelines} == {"/api/v1/timelines/tag/mastodon"}

    tap.settle(0.5)
    posts = tap.posts(name)
    assert sorted(p["payload"]["id"] for p in posts) == [s["id"] for s in ordered]
    assert len(posts) == 20 and all(p["format"] == "mastodon-status" for p in posts)
    dead = tap.dead(name)
    assert len(dead) == 1 and dead[0]["raw"] == MALFORMED.decode()
    assert dead[0]["format"] == "mastodon" and "update" in dead[0]["reason"]
    assert saved(state) == {"server": mastodon.server.url if mastodon.server else "",
                            "last_id": newest, "saved_at": saved(state)["saved_at"]}
    stopped = live.logged(caplog, "collector stopped")[0]
    assert stopped["control"] == {"delete": 1} and stopped["stopped_by"] == "SIGTERM"
    assert all(TOKEN not in line for line in live.log_lines(caplog))


def test_public_only_media_and_env_token(
    mastodon: Mastodon, brokers: str, tap: live.KafkaTap, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, debug_logs: Any,
) -> None:
    monkeypatch.setenv("MASTODON_TOKEN", TOKEN)
    dumps = [json.dumps(s).encode() for s in mastodon.statuses]
    mastodon.script = lambda n: [sse("update", d) for d in dumps]  # not filtered by the server
    state = tmp_path / "public.json"
    name = live.collector_name("media")
    args = mastodon_args(brokers, mastodon, name, "--only-media", "--state", str(state))
    newest = str(mastodon.statuses[-1]["id"])
    with live.sigterm_when(lambda: saved(state).get("last_id") == newest):
        assert args.live_run(args) == 0
    assert mastodon.streams == [{"path": "/api/v1/streaming/public",
                                 "query": {"only_media": "true"}}]
    tap.settle(0.5)
    with_media = {s["id"] for s in mastodon.statuses if s["media_attachments"]}
    assert len(with_media) == 3
    assert {p["payload"]["id"] for p in tap.posts(name)} == with_media
    assert live.logged(debug_logs, "collector stopped")[0]["filtered"] == 17
    assert all(TOKEN not in line for line in live.log_lines(debug_logs))


def test_unauthorised_is_one_clear_error(
    mastodon: Mastodon, brokers: str, monkeypatch: pytest.MonkeyPatch, debug_logs: Any,
) -> None:
    monkeypatch.delenv("MASTODON_TOKEN", raising=False)
    args = mastodon_args(brokers, mastodon, "nobody")
    assert args.live_run(args) == 2
    errors = [r for r in debug_logs.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    message = errors[0].fields["error"]
    assert "401" in message and "--token" in message and "MASTODON_TOKEN" in message
    assert len(mastodon.streams) == 1  # no retry loop against a refusal


def _shoal_collect(*argv: str) -> list[str]:
    return [sys.executable, "-m", "shoal", "collect", "mastodon", *argv]


def test_token_from_a_file_through_the_cli(
    mastodon: Mastodon, brokers: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--token-file keeps the token off the command line, and it is what the server gets."""
    monkeypatch.delenv("MASTODON_TOKEN", raising=False)
    dumps = [json.dumps(s).encode() for s in mastodon.statuses]
    mastodon.script = lambda n: [sse("update", d) for d in dumps]
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    state = tmp_path / "state.json"
    newest = str(mastodon.statuses[-1]["id"])
    assert mastodon.server is not None
    log = tmp_path / "stderr.log"  # a file: debug lines would fill a pipe nobody reads
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            _shoal_collect(mastodon.server.url, "--token-file", str(secret), "--brokers",
                           brokers, "--collector", "filed", "--state", str(state),
                           "--save-every", "0.1", "--log-level", "debug"),
            stdout=subprocess.DEVNULL, stderr=sink)
    try:
        deadline = time.monotonic() + 60
        while saved(state).get("last_id") != newest and proc.poll() is None:
            assert time.monotonic() < deadline, "the collector saved nothing within 60 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = log.read_text()
    assert proc.returncode == 0, err[-2000:]
    assert saved(state)["last_id"] == newest  # the server took the token from the file
    assert TOKEN not in err and "secret given on the command line" not in err


def test_token_flag_warns_once_and_never_shows_the_value(
    mastodon: Mastodon, brokers: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MASTODON_TOKEN", raising=False)
    wrong = "mstdn-wrong-Qq71"  # refused: the collector stops at once, exit 2
    assert mastodon.server is not None
    proc = subprocess.run(
        _shoal_collect(mastodon.server.url, "--token", wrong, "--brokers", brokers,
                       "--collector", "flagged", "--log-level", "debug"),
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    warnings = [json.loads(line) for line in proc.stderr.splitlines()
                if "secret given on the command line" in line]
    assert len(warnings) == 1, proc.stderr[-2000:]
    assert warnings[0]["flag"] == "--token" and "--token-file" in warnings[0]["instead"]
    assert "MASTODON_TOKEN" in warnings[0]["instead"]
    assert wrong not in proc.stderr + proc.stdout


def test_a_backfill_the_server_refuses_for_now_is_tried_again(
    mastodon: Mastodon, brokers: str, tap: live.KafkaTap, tmp_path: Path,
) -> None:
    """The timeline answers 503 (then 429) to the backfill after a drop: the statuses posted
    while disconnected are still collected. The stream used to go on, its newer statuses
    moved the saved position past the gap, and the gap was lost for good."""
    ordered = mastodon.statuses
    dumps = [json.dumps(s).encode() for s in ordered]
    mastodon.visible = ordered[:15]
    mastodon.script = lambda n: (
        [*(sse("update", d) for d in dumps[:10]), None] if n == 1
        else [sse("update", d) for d in dumps[15:]])
    busy = [(503, "0"), (429, "1")]
    answer = mastodon.timeline
    asked: list[tuple[float, int]] = []  # when the timeline was asked, and what it answered

    async def timeline(request: web.Request) -> web.Response:
        if busy:
            mastodon.timelines.append({"path": request.path, "query": dict(request.query)})
            status, wait = busy.pop(0)
            asked.append((time.monotonic(), status))
            return web.json_response({"error": "busy"}, status=status,
                                     headers={"Retry-After": wait})
        asked.append((time.monotonic(), 200))
        return await answer(request)

    mastodon.timeline = timeline  # type: ignore[method-assign]
    mastodon.app = web.Application()  # routes bound to the patched handler
    mastodon.app.router.add_get("/api/v1/streaming/{kind}", mastodon.stream)
    mastodon.app.router.add_get("/api/v1/timelines/tag/{tag}", timeline)
    with live.LocalServer(mastodon.app) as server:
        mastodon.server = server
        state = tmp_path / "mastodon.json"
        name = live.collector_name("mstdn")
        args = mastodon_args(brokers, mastodon, name, "--hashtag", "mastodon", "--token",
                             TOKEN, "--state", str(state))
        newest = str(ordered[-1]["id"])
        with live.sigterm_when(lambda: saved(state).get("last_id") == newest, timeout=30):
            assert args.live_run(args) == 0
    tap.settle(0.5)
    got = sorted(p["payload"]["id"] for p in tap.posts(name))
    assert got == [s["id"] for s in ordered], [s["id"] for s in ordered if s["id"] not in got]
    # The 429's Retry-After (1 s) was waited out, not the backoff's 0.2 s at most.
    refused = next(i for i, (_t, status) in enumerate(asked) if status == 429)
    assert asked[refused + 1][0] - asked[refused][0] >= 1.0, asked


def test_retry_after_lengthens_the_next_reconnection_delay_once() -> None:
    from connectors.collect.live import Backoff

    backoff = Backoff(0.05, 0.2)
    backoff.hold("3")
    assert backoff.next() == 3.0
    assert backoff.next() <= 0.2  # once: then the backoff's own delays again
    backoff.hold("Wed, 21 Oct 2015 07:28:00 GMT")  # a date in the past: no wait beyond
    assert backoff.next() <= 0.2
    backoff.hold("soon")  # unreadable: ignored
    assert backoff.next() <= 0.2
