"""Two collectors on the same sampled stream, one of them cut off for a stretch.

server-a and server-b are real ``twitter-sample`` processes (``python -m shoal collect``),
each stopped with SIGTERM; they publish to a real broker and the real dataflow writes the
hours. The stream is the 100 tweets of a real v2 search page, sent in time order as the
sampled stream would, each line carrying only the includes it needs. server-b's connection
drops after line 30 and is refused (503) twice, so it misses lines 30-44 — the day reports
must show exactly those 15 as server-b's gap, hour by hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.live_helpers import KafkaTap, LocalServer, tapping
from tests.pipeline import all_ids, report_lines, run_flow

ROOT = Path(__file__).resolve().parents[1]
PAGE = "twitter-v2/DocNow__twarc-csv/test-data/media_policy_violation_off.jsonl"
TOKENS = {"token-server-a": "server-a", "token-server-b": "server-b"}
CUT, BACK = 30, 45  # server-b hears lines [0, CUT) and [BACK, 100)
# twarc 2.14 calls the deprecated Logger.warn when a stream breaks, which these tests do.
pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")


def stream_lines(page: dict[str, Any]) -> list[tuple[dict[str, Any], bytes]]:
    """One sampled-stream line per tweet, oldest first, with the includes it refers to."""
    inc = page["includes"]
    users = {u["id"]: u for u in inc.get("users", [])}
    by_name = {u["username"]: u for u in inc.get("users", [])}
    tweets = {t["id"]: t for t in inc.get("tweets", [])}
    media = {m["media_key"]: m for m in inc.get("media", [])}
    places = {p["id"]: p for p in inc.get("places", [])}

    def refs(tweet: dict[str, Any], need: dict[str, dict[str, Any]]) -> None:
        for uid in (tweet.get("author_id"), tweet.get("in_reply_to_user_id")):
            if isinstance(uid, str) and uid in users:
                need["users"][uid] = users[uid]
        for mention in tweet.get("entities", {}).get("mentions", []):
            user = by_name.get(mention.get("username"))
            if user:
                need["users"][user["id"]] = user
        for key in tweet.get("attachments", {}).get("media_keys", []):
            if key in media:
                need["media"][key] = media[key]
        place = tweet.get("geo", {}).get("place_id")
        if place in places:
            need["places"][place] = places[place]

    out = []
    for tweet in sorted(page["data"], key=lambda t: (t["created_at"], int(t["id"]))):
        need: dict[str, dict[str, Any]] = {"users": {}, "tweets": {}, "media": {}, "places": {}}
        refs(tweet, need)
        for ref in tweet.get("referenced_tweets", []):
            if ref["id"] in tweets:
                need["tweets"][ref["id"]] = tweets[ref["id"]]
                refs(tweets[ref["id"]], need)
        includes = {k: list(v.values()) for k, v in need.items() if v}
        out.append((tweet, json.dumps({"data": tweet, "includes": includes}).encode()))
    return out


class SampledStream:
    """/2/tweets/sample/stream: everything to server-a; server-b is cut off for a stretch."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.connects: Counter[str] = Counter()
        self.server: LocalServer | None = None
        self.app = web.Application()
        self.app.router.add_get("/2/tweets/sample/stream", self.sample)

    async def sample(self, request: web.Request) -> web.StreamResponse:
        who = TOKENS.get(request.headers.get("Authorization", "").removeprefix("Bearer "))
        if who is None:
            return web.json_response({"title": "Unauthorized"}, status=401)
        self.connects[who] += 1
        n = self.connects[who]
        if who == "server-b" and n in (2, 3):
            return web.json_response({"title": "Service Unavailable"}, status=503)
        part = self.lines[:CUT] if who == "server-b" and n == 1 else (
            self.lines[BACK:] if who == "server-b" else self.lines)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionResetError):
            for line in part:
                await resp.write(line + b"\r\n")
            if who == "server-b" and n == 1:
                await asyncio.sleep(0.05)
                assert request.transport is not None
                request.transport.close()  # dropped mid-stream
                return resp
            while self.server is not None and not self.server.stopping:
                await resp.write(b"\r\n")
                await asyncio.sleep(0.1)
        return resp


def start_collector(name: str, token: str, brokers: str, url: str,
                    log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TWITTER_BEARER_TOKEN": token, "PYTHONPATH": str(ROOT),
           "SHOAL_SPOOL_DIR": str(log.parent / "spool")}
    cmd = [sys.executable, "-m", "shoal", "collect", "twitter-sample", "--brokers", brokers,
           "--collector", name, "--api-url", url, "--backoff-base", "0.05",
           "--backoff-max", "0.2"]
    with open(log, "wb") as err:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)


def stop(proc: subprocess.Popen[bytes], log: Path) -> tuple[int, list[dict[str, Any]]]:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    lines = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(line))
    return proc.returncode, lines


def wait_for(tap: KafkaTap, want: dict[str, int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tap.poll()
        if all(len({p["key"] for p in tap.posts(c)}) >= n for c, n in want.items()):
            return
    raise AssertionError(f"collectors did not deliver {want} within {timeout}s")


def test_the_day_reports_show_exactly_the_gap(
    fixtures: Path, brokers: str, tmp_path: Path
) -> None:
    page = json.loads((fixtures / PAGE).read_text().splitlines()[0])
    stream = stream_lines(page)
    assert len(stream) == 100
    missed = {t["id"] for t, _ in stream[CUT:BACK]}
    fake = SampledStream([line for _, line in stream])
    with LocalServer(fake.app) as server, tapping(brokers) as tap:
        fake.server = server
        logs = {name: tmp_path / f"{name}.log" for name in TOKENS.values()}
        procs = {name: start_collector(name, token, brokers, server.url, logs[name])
                 for token, name in TOKENS.items()}
        try:
            wait_for(tap, {"server-a": 100, "server-b": 100 - len(missed)})
        finally:
            results = {name: stop(proc, logs[name]) for name, proc in procs.items()}
        tap.settle(0.5)
        delivered = {c: {p["payload"]["id"] for p in tap.posts(c)} for c in TOKENS.values()}

    for name, (code, log_lines) in results.items():
        assert code == 0, (name, log_lines[-3:])
        assert any(line["msg"] == "collector stopped" and line["stopped_by"] == "SIGTERM"
                   for line in log_lines)
    all_ids_ = {t["id"] for t, _ in stream}
    assert delivered["server-a"] == all_ids_
    assert delivered["server-b"] == all_ids_ - missed
    assert fake.connects == {"server-a": 1, "server-b": 4}
    gaps = [line for line in results["server-b"][1] if line["msg"] == "stream gap"]
    assert len(gaps) == 1 and gaps[0]["seconds"] > 0 and gaps[0]["start"] < gaps[0]["end"]
    assert not [line for line in results["server-a"][1] if line["msg"] == "stream gap"]

    # The real dataflow. The stream squeezes 40 hours of tweets into a second, so an hour
    # must stay open until the end (lateness) for "late" to mean what it means live.
    out = tmp_path / "data"
    run_flow(brokers, out, lateness=10**9)
    ids = all_ids(out)
    assert sorted(ids) == sorted(all_ids_) and len(ids) == len(set(ids))  # each post once

    expected: dict[tuple[str, str], Counter[str]] = {}
    for tweet, _ in stream:
        day, hour = tweet["created_at"][:10], tweet["created_at"][11:13]
        counts = expected.setdefault((day, hour), Counter())
        counts["total"] += 1
        counts["missed"] += tweet["id"] in missed
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for report in sorted((out / "twitter").glob("*/*_report.txt")):
        header, *rows = [line.split("\t") for line in report_lines(report)]
        assert header == ["hour", "server-a", "server-b", "total", "diff", "diff %", "late"]
        for cells in rows:
            seen[(report.parent.name, cells[0])] = dict(zip(header, cells, strict=True))
    assert seen.keys() == expected.keys()
    for key, counts in expected.items():
        row, total, gap = seen[key], counts["total"], counts["missed"]
        assert row == {"hour": key[1], "server-a": str(total), "server-b": str(total - gap),
                       "total": str(total), "diff": str(gap),
                       "diff %": f"{100.0 * gap / total:.2f}", "late": "0"}, key
    assert sum(int(r["diff"]) for r in seen.values()) == len(missed) == 15
    assert sum(1 for r in seen.values() if r["diff"] != "0") >= 2  # the gap spans hours
