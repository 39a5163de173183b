"""twitter-sample and twitter-search against a local server speaking the v2 endpoints.

twarc talks to it for real (``--api-url``); what the collector published is read back from a
real broker. The collector runs in the main thread and is stopped the way systemd stops it,
with SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from connectors.collect.live import Backoff
from connectors.collect.twitter import bearer_token
from tests import live_helpers as live

V2 = "twitter-v2/DocNow__twarc-csv/test-data"
TOKEN = "AAAA-test-bearer-Zx81qv"  # must never show up in a log line
# twarc 2.14 calls the deprecated Logger.warn when a stream breaks, which these tests do.
pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")


# --------------------------------------------------------------------------- the fake API


def stream_lines(path: Path) -> list[bytes]:
    """The tweet lines of a twarc stream capture, as the API sent them (without ``__twarc``)."""
    out = []
    for line in path.read_text().splitlines():
        value = json.loads(line)
        if "data" in value:
            value.pop("__twarc", None)
            out.append(json.dumps(value).encode())
    return out


class TwitterApi:
    """/2/tweets/sample/stream and /2/tweets/search/{recent,all} from scripted fixtures."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.sample_script: Callable[[int], list[Any]] = lambda n: []
        self.pages: dict[str, list[dict[str, Any]]] = {}
        self.hold_token: str | None = None  # a search page that never answers
        self.held = threading.Event()
        self.server: live.LocalServer | None = None
        app = web.Application()
        app.router.add_get("/2/tweets/sample/stream", self.sample)
        app.router.add_get("/2/tweets/search/recent", self.search)
        app.router.add_get("/2/tweets/search/all", self.search)
        self.app = app

    def _record(self, request: web.Request) -> dict[str, Any] | None:
        hit = {"path": request.path, "query": dict(request.query), "time": time.time(),
               "auth": request.headers.get("Authorization", "")}
        self.requests.append(hit)
        return hit if hit["auth"] == f"Bearer {TOKEN}" else None

    def hits(self, path: str) -> list[dict[str, Any]]:
        return [h for h in self.requests if h["path"] == path]

    async def sample(self, request: web.Request) -> web.StreamResponse:
        if self._record(request) is None:
            return web.json_response({"title": "Unauthorized", "detail": "Unauthorized"},
                                     status=401)
        script = self.sample_script(len(self.hits(request.path)))
        if script and script[0][0] == "status":
            _, status, headers = script[0]
            return web.json_response({"title": "Too Many Requests"}, status=status,
                                     headers=headers)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for action, value in script:
            if action == "lines":
                for line in value:
                    await resp.write(line + b"\r\n")
            elif action == "abort":  # the connection drops mid-stream, no chunked trailer
                await asyncio.sleep(0.05)
                assert request.transport is not None
                request.transport.close()
                return resp
        with contextlib.suppress(ConnectionResetError):  # the collector hung up
            while self.server is not None and not self.server.stopping:
                await resp.write(b"\r\n")  # keep-alive
                await asyncio.sleep(0.1)
        return resp

    async def search(self, request: web.Request) -> web.StreamResponse:
        if self._record(request) is None:
            return web.json_response({"title": "Unauthorized"}, status=401)
        q = request.query
        start = datetime.fromisoformat(q["start_time"].replace("Z", "+00:00")).isoformat()
        pages = self.pages[start]
        token = q.get("next_token")
        if token is not None and token == self.hold_token:
            self.held.set()
            while self.server is not None and not self.server.stopping:
                await asyncio.sleep(0.05)
        index = int(token.rsplit("-", 1)[1]) if token else 0
        page = {k: v for k, v in pages[index].items() if k != "__twarc"}
        meta: dict[str, Any] = {"result_count": len(page.get("data", []))}
        if index + 1 < len(pages):
            meta["next_token"] = f"{start}-{index + 1}"
        page["meta"] = meta
        return web.json_response(page)


@pytest.fixture
def api() -> Iterator[TwitterApi]:
    fake = TwitterApi()
    with live.LocalServer(fake.app) as server:
        fake.server = server
        yield fake


@pytest.fixture(autouse=True)
def bearer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TWITTER_BEARER_TOKEN", TOKEN)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-twarc-config"))
    monkeypatch.setenv("SHOAL_SPOOL_DIR", str(tmp_path / "spool"))  # the publisher's outbox


def fast(*argv: str) -> tuple[str, ...]:
    return (*argv, "--backoff-base", "0.05", "--backoff-max", "0.2")


# --------------------------------------------------------------------------- sampled stream


def test_sample_survives_429_malformed_line_and_disconnect(
    fixtures: Path, api: TwitterApi, brokers: str, tap: live.KafkaTap,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    caplog = debug_logs
    lines = stream_lines(fixtures / V2 / "streaming_output.jsonl")
    assert len(lines) == 8
    reset = int(time.time()) + 2
    scripts: dict[int, list[Any]] = {
        1: [("status", 429, {"x-rate-limit-reset": str(reset), "x-rate-limit-remaining": "0"})],
        2: [("lines", [*lines[:3], b"{not json", *lines[3:5]]), ("abort", None)],
    }
    api.sample_script = lambda n: scripts.get(n, [("lines", lines[5:])])
    name = live.collector_name("sample")
    args = live.live_args(*fast("twitter-sample", "--brokers", brokers, "--collector", name,
                           "--api-url", api.server.url if api.server else ""))

    def all_in() -> bool:
        tap.poll()
        return len(tap.posts(name)) >= 8 and len(tap.dead(name)) >= 1

    with live.sigterm_when(all_in) as fired:
        started = time.monotonic()
        assert args.live_run(args) == 0
    assert fired.is_set() and time.monotonic() - started < 20
    tap.settle(0.5)

    served = [json.loads(line)["data"]["id"] for line in lines]
    posts = tap.posts(name)
    assert sorted(p["payload"]["id"] for p in posts) == sorted(served)  # each line once
    assert {p["key"] for p in posts} == {f"twitter:{i}" for i in served}
    assert all(p["format"] == "twitter-v2" and p["retrieved_at"] for p in posts)
    # Expansions inlined by the v2 reader: the photo of the first tweet travels with it.
    first = next(p["payload"] for p in posts if p["payload"]["id"] == served[0])
    media = first["attachments"]["media"]
    assert media and media[0]["url"].startswith("https://pbs.twimg.com/")
    assert first["author"]["username"] and first["__twarc"]["retrieved_at"]

    dead = tap.dead(name)
    assert len(dead) == 1 and dead[0]["raw"] == "{not json"
    assert dead[0]["reason"].startswith("invalid JSON line") and dead[0]["format"] == "twitter-v2"

    connects = api.hits("/2/tweets/sample/stream")
    assert len(connects) == 3  # the malformed line did not cost a reconnection
    assert connects[1]["time"] >= reset  # waited for the rate-limit window
    assert "attachments.media_keys" in connects[1]["query"]["expansions"]
    assert "url" in connects[1]["query"]["media.fields"].split(",")

    gaps = live.logged(caplog, "stream gap")
    assert len(gaps) == 1
    gap = gaps[0]
    start, end = datetime.fromisoformat(gap["start"]), datetime.fromisoformat(gap["end"])
    assert 0 < gap["seconds"] < 10
    assert abs((end - start).total_seconds() - gap["seconds"]) < 0.1
    assert live.logged(caplog, "rate limited")[0]["wait_seconds"] > 0
    stopped = live.logged(caplog, "collector stopped")
    assert stopped and stopped[0]["stopped_by"] == "SIGTERM" and stopped[0]["posts"] == 8
    assert all(TOKEN not in line for line in live.log_lines(caplog))
    assert all(h["auth"] == f"Bearer {TOKEN}" for h in api.requests)


def test_sample_refused_token_is_one_clear_error(
    api: TwitterApi, brokers: str, monkeypatch: pytest.MonkeyPatch,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    caplog = debug_logs
    wrong = "BBBB-wrong-token-Qp2"
    monkeypatch.setenv("TWITTER_BEARER_TOKEN", wrong)
    args = live.live_args("twitter-sample", "--brokers", brokers, "--collector", "x",
                     "--api-url", api.server.url if api.server else "")
    assert args.live_run(args) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "401" in errors[0].fields["error"]  # type: ignore[attr-defined]
    assert "bearer token" in errors[0].fields["error"]  # type: ignore[attr-defined]
    assert len(api.requests) == 1
    assert all(wrong not in line for line in live.log_lines(caplog))


def test_missing_token_fails_before_kafka(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("TWITTER_BEARER_TOKEN")
    args = live.live_args("twitter-sample", "--brokers", "127.0.0.1:9", "--collector", "x")
    assert args.live_run(args) == 2
    assert "TWITTER_BEARER_TOKEN" in live.logged(caplog, "collector failed")[0]["error"]
    assert not live.logged(caplog, "collector started")


# --------------------------------------------------------------------------- search


def _v2_pages(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def search_pages(fixtures: Path, api: TwitterApi) -> dict[str, list[dict[str, Any]]]:
    api.pages = {
        "2021-09-22T00:00:00+00:00": _v2_pages(fixtures / V2 / "withheld.jsonl"),
        "2021-09-22T01:00:00+00:00": _v2_pages(fixtures / V2 / "brexit.jsonl"),
        "2021-09-22T02:00:00+00:00": _v2_pages(fixtures / V2 / "kpop.jsonl"),
    }
    return api.pages


def _ids(pages: list[dict[str, Any]]) -> list[str]:
    return [t["id"] for page in pages for t in page["data"]]


def search_args(brokers: str, api: TwitterApi, name: str, *extra: str) -> argparse.Namespace:
    return live.live_args(*fast("twitter-search", "#brexit OR #kpop", "--brokers", brokers,
                           "--collector", name, "--api-url",
                           api.server.url if api.server else "", *extra))


def test_search_resumes_where_it_stopped(
    api: TwitterApi, search_pages: dict[str, list[dict[str, Any]]], brokers: str,
    tap: live.KafkaTap, tmp_path: Path,
) -> None:
    state = tmp_path / "search.json"
    name = live.collector_name("search")
    window = ("--since", "2021-09-22T00:00:00Z", "--until", "2021-09-22T03:00:00Z",
              "--slice-hours", "1", "--state", str(state))
    api.hold_token = "2021-09-22T00:00:00+00:00-2"  # the third page of the first slice hangs
    args = search_args(brokers, api, name, *window)
    with live.sigterm_when(api.held.is_set) as fired:
        assert args.live_run(args) == 0
    assert fired.is_set()
    saved = json.loads(state.read_text())
    assert saved["done"] == [] and saved["current"] == "2021-09-22T00:00:00Z"
    assert saved["next_token"] == api.hold_token and saved["published"] == 2

    api.hold_token = None
    first_run = len(api.requests)
    args = search_args(brokers, api, name, "--state", str(state))  # the window comes from state
    assert args.live_run(args) == 0
    second = api.requests[first_run:]
    assert [(h["query"]["start_time"][:13], h["query"].get("next_token", "")[-2:])
            for h in second] == [
        ("2021-09-22T00", "-2"), ("2021-09-22T00", "-3"), ("2021-09-22T00", "-4"),
        ("2021-09-22T01", ""), ("2021-09-22T02", ""),
    ]
    assert all(h["query"]["end_time"][:13] == f"2021-09-22T0{int(h['query']['start_time'][12]) + 1}"
               for h in second)
    tap.settle(0.5)
    expected = [i for pages in search_pages.values() for i in _ids(pages)]
    got = [p["payload"]["id"] for p in tap.posts(name)]
    assert sorted(got) == sorted(expected) and len(got) == 415  # nothing twice, nothing lost
    saved = json.loads(state.read_text())
    assert saved["done"] == ["2021-09-22T00:00:00Z", "2021-09-22T01:00:00Z",
                             "2021-09-22T02:00:00Z"]
    assert saved["current"] is None and saved["published"] == 415


def test_search_limit_and_archive(
    api: TwitterApi, search_pages: dict[str, list[dict[str, Any]]], brokers: str,
    tap: live.KafkaTap, tmp_path: Path,
) -> None:
    name = live.collector_name("limit")
    state = tmp_path / "limit.json"
    args = search_args(brokers, api, name, "--since", "2021-09-22", "--until",
                       "2021-09-22T03:00", "--slice-hours", "1", "--limit", "120",
                       "--state", str(state))
    assert args.live_run(args) == 0  # ends by itself
    assert json.loads(state.read_text())["next_token"] == "2021-09-22T00:00:00+00:00-4"
    assert len(api.hits("/2/tweets/search/recent")) == 5

    archive = live.collector_name("archive")
    args = search_args(brokers, api, archive, "--archive", "--since", "2021-09-22T01:00:00Z",
                       "--until", "2021-09-22T02:00:00Z", "--slice-hours", "0")
    assert args.live_run(args) == 0
    assert [h["query"]["start_time"][:19] for h in api.hits("/2/tweets/search/all")] == [
        "2021-09-22T01:00:00"]
    tap.settle(0.5)
    limited = [p["payload"]["id"] for p in tap.posts(name)]
    withheld = _ids(search_pages["2021-09-22T00:00:00+00:00"])
    assert sorted(limited) == sorted(withheld[:120])  # in page order: the newest 120
    assert sorted(p["payload"]["id"] for p in tap.posts(archive)) == sorted(
        _ids(search_pages["2021-09-22T01:00:00+00:00"]))


def test_search_state_of_another_query_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "s.json"
    state.write_text(json.dumps({"query": "other", "endpoint": "recent"}))
    args = live.live_args("twitter-search", "q", "--brokers", "127.0.0.1:9", "--collector", "x",
                     "--state", str(state))
    assert args.live_run(args) == 2
    assert "'other'" in live.logged(caplog, "collector failed")[0]["error"]


# --------------------------------------------------------------------------- small parts


def test_backoff_grows_is_jittered_capped_and_resets() -> None:
    backoff = Backoff(0.5, 8.0)
    delays = [backoff.next() for _ in range(12)]
    ceilings = [min(8.0, 0.5 * 2**i) for i in range(12)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d, 6) for d in delays[6:]}) > 1  # capped, yet not in lockstep
    backoff.reset()
    assert backoff.next() <= 0.5


def test_token_from_twarc_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TWITTER_BEARER_TOKEN")
    config = tmp_path / "no-twarc-config" / "twarc" / "config"
    config.parent.mkdir(parents=True)
    config.write_text(f'bearer_token = "{TOKEN}"\nconsumer_key = "ck"\n')
    assert bearer_token() == TOKEN
