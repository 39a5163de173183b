"""``shoal collect tiktok --hashtags`` against a TikTok Research API of our own on 127.0.0.1.

The fake speaks the API's two endpoints with answers shaped like the real ones (the video
fields of traktok's recorded answer, ../shared/fixtures/tiktok-research): an OAuth
client-credentials token, and video queries paged by cursor/search_id, refusing windows
longer than 30 days. Mid-run it revokes the token (401 ``access_token_invalid``) and once
answers 429 ``daily_quota_limit_exceeded``; the collector's ``--quota-wait`` stands in for
the wait until the next UTC day.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from connectors.collect.tiktok import next_utc_day, windows
from tests.live_helpers import KafkaTap, LocalServer, collector_name, finish, live_args
from tests.pipeline import all_rows, run_flow

ROOT = Path(__file__).resolve().parents[1]
KEY, SECRET = "ck-test", "cs-s3cr3t-value"
SINCE, UNTIL = date(2024, 1, 1), date(2024, 2, 14)  # 45 days: two windows
QUOTA_WAIT = 1.5


def template(fixtures: Path) -> dict[str, Any]:
    path = (fixtures / "tiktok-research" / "JBGruber__traktok" / "tests" / "testthat"
            / "example_resp_q_videos.json")
    video: dict[str, Any] = json.loads(path.read_text())["data"]["videos"][0]
    return video


class FakeResearchAPI:
    """Videos per hashtag; a token revoked after ``revoke_after`` queries; the quota hit at
    query ``quota_at``; ``violations`` lists queries inside the quota window."""

    def __init__(self, videos: dict[str, list[dict[str, Any]]]) -> None:
        self.videos = videos
        self.tokens: list[str] = []
        self.valid: set[str] = set()
        self.queries: list[dict[str, Any]] = []
        self.revoke_after = 4
        self.quota_at = 9
        self.quota_until = 0.0
        self.violations: list[float] = []
        self.refused_windows: list[tuple[str, str]] = []
        self.delay = 0.0

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_key") != KEY or form.get("client_secret") != SECRET or \
                form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "invalid_client", "error_description":
                                      "Client key or secret is incorrect.", "log_id": "x"},
                                     status=401)
        token = f"clt.{len(self.tokens) + 1}"
        self.tokens.append(token)
        self.valid.add(token)
        return web.json_response({"access_token": token, "expires_in": 7200,
                                  "token_type": "Bearer"})

    @staticmethod
    def error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error": {"code": code, "message": message,
                                            "log_id": "20240101"}}, status=status)

    async def query(self, request: web.Request) -> web.Response:
        import asyncio

        await asyncio.sleep(self.delay)
        auth = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if auth not in self.valid:
            return self.error(401, "access_token_invalid", "The access token is invalid")
        now = time.time()
        if now < self.quota_until:
            self.violations.append(now)
        body = await request.json()
        self.queries.append(body)
        n = len(self.queries)
        if n == self.revoke_after:
            self.valid.discard(auth)
            return self.error(401, "access_token_invalid", "The access token is invalid")
        if n == self.quota_at:
            self.quota_until = now + QUOTA_WAIT - 0.2
            return self.error(429, "daily_quota_limit_exceeded", "daily quota exceeded")
        assert "id" in request.query["fields"].split(",")
        start = datetime.strptime(body["start_date"], "%Y%m%d").replace(tzinfo=UTC)
        end = datetime.strptime(body["end_date"], "%Y%m%d").replace(tzinfo=UTC)
        if (end - start).days > 29:
            self.refused_windows.append((body["start_date"], body["end_date"]))
            return self.error(400, "invalid_params", "Search window is longer than 30 days")
        tag = body["query"]["and"][0]["field_values"][0]
        found = [v for v in self.videos.get(tag, [])
                 if start.timestamp() <= v["create_time"] < end.timestamp() + 86400]
        cursor, size = int(body.get("cursor") or 0), int(body["max_count"])
        search_id = body.get("search_id") or f"s-{tag}-{body['start_date']}"
        page = found[cursor:cursor + size]
        return web.json_response({
            "data": {"videos": page, "cursor": cursor + len(page), "search_id": search_id,
                     "has_more": cursor + len(page) < len(found)},
            "error": {"code": "ok", "message": "", "log_id": "20240101"}})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/oauth/token/", self.token)
        app.router.add_post("/v2/research/video/query/", self.query)
        return app


def videos(fixtures: Path) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """london: 7 + 5 videos, paris 6 + 4, one of them in both (window one)."""
    base = template(fixtures)
    out: dict[str, list[dict[str, Any]]] = {"london": [], "paris": []}
    n = 0
    for tag, counts in (("london", (7, 5)), ("paris", (6, 4))):
        for first, count in zip((SINCE, SINCE + timedelta(days=30)), counts, strict=True):
            for i in range(count):
                n += 1
                when = datetime.combine(first + timedelta(days=2 * i), datetime.min.time(), UTC)
                video = {k: v for k, v in base.items() if k != "video_id"}
                video.update(id=7300000000000000000 + n, username=f"user{n % 3}",
                             create_time=int(when.timestamp()) + 3600 * n % 86400,
                             hashtag_names=[tag, "pov"],
                             video_description=f"{tag} video {n} #{tag} #pov")
                out[tag].append(video)
    shared = out["london"][1]
    shared["hashtag_names"] = ["london", "paris"]
    out["paris"].insert(0, dict(shared))
    return out, str(shared["id"])


def collector(server: LocalServer, brokers: str, name: str, tmp: Path,
              *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TIKTOK_CLIENT_KEY": KEY, "TIKTOK_CLIENT_SECRET": SECRET}
    argv = [sys.executable, "-m", "shoal", "collect", "tiktok", "--brokers", brokers,
            "--collector", name, "--hashtags", "london", "#Paris", "--since", str(SINCE),
            "--until", str(UNTIL), "--research-api-url", server.url, "--page-size", "3",
            "--state", str(tmp / "state.json"), "--quota-wait", str(QUOTA_WAIT),
            "--backoff-base", "0.05", "--backoff-max", "0.2", *extra]
    return subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE)


def test_windows_are_at_most_30_days() -> None:
    assert windows(SINCE, UNTIL) == [(date(2024, 1, 1), date(2024, 1, 30)),
                                     (date(2024, 1, 31), date(2024, 2, 14))]
    assert windows(SINCE, SINCE) == [(SINCE, SINCE)]
    midday = datetime(2024, 3, 5, 12, tzinfo=UTC).timestamp()
    assert next_utc_day(midday) == datetime(2024, 3, 6, 0, 1, tzinfo=UTC).timestamp()


def test_two_hashtags_two_windows_token_quota_and_a_kill(
        fixtures: Path, brokers: str, tap: KafkaTap, tmp_path: Path) -> None:
    data, shared = videos(fixtures)
    fake = FakeResearchAPI(data)
    fake.delay = 0.15
    name = collector_name("tt")
    with LocalServer(fake.app()) as server:
        first = collector(server, brokers, name, tmp_path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(tap.posts(name)) < 6 and first.poll() is None:
            tap.poll()
        assert first.poll() is None, finish(first)[1][-5:]
        first.send_signal(signal.SIGKILL)
        _, first_logs = finish(first, 10)
        tap.settle(0.5)
        killed_at = len(tap.posts(name))
        assert 6 <= killed_at < 21

        code, logs = finish(collector(server, brokers, name, tmp_path))
        assert code == 0, logs[-5:]
        logs = first_logs + logs
        tap.settle(1.0)

    expected = {str(v["id"]) for vs in data.values() for v in vs}
    assert len(expected) == 22
    keys = Counter(p["key"] for p in tap.posts(name))
    assert set(keys) == {f"tiktok:{i}" for i in expected}
    assert max(keys.values()) == 1, "a post was published twice"
    by_id = {p["key"].split(":")[1]: p for p in tap.posts(name)}
    assert all(p["format"] == "tiktok-research" for p in by_id.values())
    for tag in ("london", "paris"):
        for v in data[tag]:
            if str(v["id"]) != shared:
                assert by_id[str(v["id"])]["payload"]["query"] == tag

    # Windows of at most 30 days, both asked for; paged with the search id the API gave.
    assert fake.refused_windows == []
    asked = {(q["start_date"], q["end_date"]) for q in fake.queries}
    assert asked == {("20240101", "20240130"), ("20240131", "20240214")}
    assert any(q.get("cursor") and q.get("search_id") for q in fake.queries)
    # The revoked token was replaced; the quota was waited out (once, logged with the time).
    assert len(fake.tokens) >= 3  # first run, the refresh after the 401, second run
    assert fake.quota_until > 0 and fake.violations == []
    waits = [x for x in logs if x.get("msg") == "daily quota reached"]
    assert len(waits) == 1 and waits[0]["resumes_at"]
    assert SECRET not in json.dumps(logs) and "clt.1" not in json.dumps(logs)

    # Per hashtag: the IDs, the shared video in both lists; the state says both windows done.
    for tag in ("london", "paris"):
        listed = (tmp_path / f"{tag}_post_ids.txt").read_text().split()
        assert sorted(listed) == sorted(str(v["id"]) for v in data[tag])
        assert len(listed) == len(set(listed))
    state = json.loads((tmp_path / "state.json").read_text())
    for tag in ("london", "paris"):
        assert state["hashtags"][tag]["windows_done"] == ["20240101-20240130",
                                                          "20240131-20240214"]
        assert "cursor" not in state["hashtags"][tag]

    runs = [json.loads(line) for line in
            (tmp_path / "state.json.runs.jsonl").read_text().splitlines()]
    finals = {r["hashtag"]: r for r in runs if r["outcome"] == "ok"}
    assert set(finals) == {"london", "paris"}
    assert all(r["started"] <= r["ended"] and r["videos"] == r["posts"] for r in runs)
    # The killed run wrote no line for the hashtag it was in; what it published of that
    # hashtag the next run counts as seen, not as posts.
    assert 22 - killed_at <= sum(r["posts"] for r in runs) <= 22
    assert sum(r["seen"] for r in runs if r["hashtag"] == "paris") >= 1  # shared, via london

    # A third run finds every window done: it asks nothing and publishes nothing.
    before = len(fake.queries)
    with LocalServer(fake.app()) as server:
        code, _ = finish(collector(server, brokers, name, tmp_path))
    assert code == 0 and len(fake.queries) == before

    # Through the real dataflow: every video once in the hourly files.
    out = tmp_path / "data"
    run_flow(brokers, out)
    rows = [r for r in all_rows(out, "tiktok") if r["id"] in expected]
    assert sorted(r["id"] for r in rows) == sorted(expected)
    row = next(r for r in rows if r["id"] == shared)
    assert row["media_urls"] == f"https://www.tiktok.com/@{row['author.username']}/video/{shared}"
    assert row["hashtags"] == "london|paris"


def test_refused_credentials_are_one_line(brokers: str, tmp_path: Path) -> None:
    fake = FakeResearchAPI({})
    with LocalServer(fake.app()) as server:
        env = {**os.environ, "TIKTOK_CLIENT_KEY": KEY, "TIKTOK_CLIENT_SECRET": "wrong-secret"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal", "collect", "tiktok", "--brokers", brokers,
             "--collector", collector_name("tt"), "--hashtags", "london", "--research-api-url",
             server.url, "--state", str(tmp_path / "s.json"), "--retries", "0"],
            cwd=ROOT, env=env, stderr=subprocess.PIPE)
        code, logs = finish(proc, 60)
    assert code == 2
    failed = [x for x in logs if x.get("msg") == "collector failed"]
    assert len(failed) == 1 and "invalid_client" in failed[0]["error"]
    assert "wrong-secret" not in json.dumps(logs)
    assert fake.queries == []


def test_no_credentials_is_one_line(brokers: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "SHOAL_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", "collect", "tiktok", "--brokers", brokers,
         "--collector", "tt", "--hashtags", "london"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE)
    code, logs = finish(proc, 60)
    assert code == 2
    assert "TIKTOK_CLIENT_KEY" in next(x for x in logs if x.get("msg") == "collector failed")[
        "error"]


class OddResearchAPI(FakeResearchAPI):
    """Answers #odd with ``videos`` that is not a list and #weird with a cursor that is no
    number (a proxy's or a changed API's answer); #london as the real API would. The first
    token request is answered 429 (busy), as the API's gateway does under load."""

    busy = 1

    async def token(self, request: web.Request) -> web.Response:
        if self.busy:
            self.busy -= 1
            return web.json_response({"error": "rate_limit_exceeded"}, status=429)
        return await super().token(request)

    async def query(self, request: web.Request) -> web.Response:
        body = await request.json()
        tag = body["query"]["and"][0]["field_values"][0]
        if tag in ("odd", "weird"):
            self.queries.append(body)
            data: dict[str, Any] = (
                {"videos": 5, "cursor": 0, "has_more": False} if tag == "odd" else
                {"videos": [], "cursor": "next", "has_more": True, "search_id": "s"})
            return web.json_response({"data": data, "error": {"code": "ok"}})
        request._read_bytes = json.dumps(body).encode()  # read again by the real handler
        return await super().query(request)


def test_an_answer_of_odd_shape_is_that_hashtags_error(fixtures: Path, brokers: str,
                                                       tap: KafkaTap, tmp_path: Path) -> None:
    data, _ = videos(fixtures)
    fake = OddResearchAPI({"london": data["london"]})
    fake.revoke_after = fake.quota_at = 10**6
    name = collector_name("tt")
    with LocalServer(fake.app()) as server:
        args = live_args(
            "tiktok", "--brokers", brokers, "--collector", name, "--hashtags", "#Odd", "weird",
            "London", "#london", "--since", str(SINCE), "--until", str(SINCE + timedelta(9)),
            "--research-api-url", server.url, "--client-key", KEY, "--client-secret", SECRET,
            "--state", str(tmp_path / "state.json"), "--run-log",
            str(tmp_path / "logs" / "runs.jsonl"), "--retries", "1", "--backoff-base", "0.05")
        assert args.live_run(args) == 0
    runs = [json.loads(line) for line in
            (tmp_path / "logs" / "runs.jsonl").read_text().splitlines()]
    assert [(r["target"], r["outcome"]) for r in runs] == [
        ("#odd", "error"), ("#weird", "error"), ("#london", "ok")]
    assert "unexpected_answer" in runs[0]["error"] and "'next'" in runs[1]["error"]
    assert fake.busy == 0 and len(fake.tokens) == 1
    tap.settle(0.5)
    assert runs[2]["posts"] == len(tap.posts(name)) > 0
    assert all(p["payload"]["query"] == "london" for p in tap.posts(name))


def test_names_that_are_no_hashtag_or_user_are_one_line() -> None:
    for flag, value in (("--hashtags", ".."), ("--hashtags", "a/b"), ("--users", ".."),
                        ("--users", "../etc"), ("--hashtags", "two words")):
        args = live_args("tiktok", "--brokers", "127.0.0.1:1", "--collector", "tt", flag,
                         value, "--client-key", KEY, "--client-secret", SECRET)
        assert args.live_run(args) == 2, value


def test_bad_ranges_are_one_line() -> None:
    """Dates checked before anything is asked: a day that does not exist, and a range that
    ends before it starts, each one line naming what to fix, and no traceback."""
    env = {**os.environ, "TIKTOK_CLIENT_KEY": KEY, "TIKTOK_CLIENT_SECRET": SECRET}
    for since, until, words in (("2024-02-30", "2024-03-01", "not a date"),
                                ("2024-03-02", "2024-03-01", "is after")):
        proc = subprocess.run(
            [sys.executable, "-m", "shoal", "collect", "tiktok", "--brokers", "127.0.0.1:1",
             "--collector", "tt", "--hashtags", "x", "--since", since, "--until", until],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_max_posts_caps_each_hashtag(fixtures: Path, brokers: str, tap: KafkaTap,
                                     tmp_path: Path) -> None:
    """--max-posts 5 with pages of 3: five London videos (the second page cut at two), the
    second window never asked; a second run asks nothing more."""
    data, _ = videos(fixtures)
    fake = FakeResearchAPI({"london": data["london"]})
    fake.revoke_after = fake.quota_at = 10**6
    name = collector_name("tt")
    with LocalServer(fake.app()) as server:
        for _ in range(2):
            args = live_args(
                "tiktok", "--brokers", brokers, "--collector", name, "--hashtags", "london",
                "--since", str(SINCE), "--until", str(UNTIL), "--research-api-url",
                server.url, "--client-key", KEY, "--client-secret", SECRET, "--page-size",
                "3", "--max-posts", "5", "--state", str(tmp_path / "state.json"))
            assert args.live_run(args) == 0
    assert len(fake.queries) == 2
    assert {q["start_date"] for q in fake.queries} == {"20240101"}
    tap.settle(0.5)
    assert len(tap.posts(name)) == 5
    assert len((tmp_path / "london_post_ids.txt").read_text().split()) == 5


def test_hashtags_of_every_script_are_asked() -> None:
    """Devanagari's vowel signs, Thai's marks, a café typed with a combining accent, the dot
    İstanbul keeps in lower case and Persian's ZWNJ are parts of hashtags: refusing them
    stopped a whole TikTok batch at start (and Instagram called them not-found unasked).
    Both spellings of café are one hashtag, in NFC."""
    from connectors.collect.instagram import targets_of, valid_target
    from connectors.collect.tiktok import names

    tags = ["भारत", "สวัสดี", "cafe\u0301", "café", "İstanbul", "می\u200cخواهم", "東京"]
    assert names(tags, "#") == ["भारत", "สวัสดี", "café", "i\u0307stanbul",
                                "می\u200cخواهم", "東京"]
    args = live_args("instagram", "--brokers", "127.0.0.1:1", "--collector", "ig",
                     "--hashtags", *tags)
    targets = targets_of(args)
    assert len(targets) == 6 and all(valid_target(t) for t in targets), targets
    for bad in ("..", "a/b", "two words", "\u0301", "\u200c"):
        assert not valid_target(f"hashtag:{bad}")
        try:
            names([bad], "#")
        except Exception as exc:
            assert "not a TikTok hashtag" in str(exc)
        else:
            raise AssertionError(bad)


class BusyResearchAPI(FakeResearchAPI):
    """Answers the first ``busy`` queries 429 (or 503) with ``Retry-After: 1``, as a gateway
    under load does, and records when each query came."""

    def __init__(self, videos: dict[str, list[dict[str, Any]]], busy: int) -> None:
        super().__init__(videos)
        self.busy = busy
        self.times: list[float] = []

    async def query(self, request: web.Request) -> web.Response:
        self.times.append(time.monotonic())
        if self.busy:
            self.busy -= 1
            status = 429 if self.busy % 2 else 503
            return web.json_response({"error": {"code": "rate_limit_exceeded", "message":
                                                "slow down"}}, status=status,
                                     headers={"Retry-After": "1"})
        return await super().query(request)


def london_batch(fake: Any, brokers: str, tmp_path: Path, *extra: str) -> str:
    """One batch over nine days of #london against ``fake``; its collector's name."""
    name = collector_name("tt")
    with LocalServer(fake.app()) as server:
        args = live_args(
            "tiktok", "--brokers", brokers, "--collector", name, "--hashtags", "london",
            "--since", str(SINCE), "--until", str(SINCE + timedelta(9)),
            "--research-api-url", server.url, "--client-key", KEY, "--client-secret", SECRET,
            "--state", str(tmp_path / "state.json"), *extra)
        assert args.live_run(args) == 0
    return name


def test_a_429_with_retry_after_is_waited_out(fixtures: Path, brokers: str, tap: KafkaTap,
                                             tmp_path: Path) -> None:
    """A 429 or 503 saying ``Retry-After: 1`` is asked again no sooner than that: a backoff
    of its own (0.05 s here) made the hashtag spend its retries before the server was
    ready, and fail."""
    data, _ = videos(fixtures)
    fake = BusyResearchAPI({"london": data["london"]}, busy=2)
    fake.revoke_after = fake.quota_at = 10**6
    london_batch(fake, brokers, tmp_path, "--retries", "2", "--backoff-base", "0.05",
                 "--backoff-max", "0.1")
    runs = [json.loads(line) for line in
            (tmp_path / "state.json.runs.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in runs] == ["ok"], runs
    gaps = [b - a for a, b in zip(fake.times[:2], fake.times[1:3], strict=True)]
    assert all(g >= 0.95 for g in gaps), gaps


class HtmlResearchAPI(FakeResearchAPI):
    """Answers 200 with an HTML page (a captive portal's, a proxy's) instead of JSON: the
    first ``html`` London queries, and every Paris one."""

    def __init__(self, videos: dict[str, list[dict[str, Any]]], html: int) -> None:
        super().__init__(videos)
        self.html = html

    async def query(self, request: web.Request) -> web.Response:
        body = await request.json()
        tag = body["query"]["and"][0]["field_values"][0]
        if tag == "paris" or self.html:
            if tag != "paris":
                self.html -= 1
            return web.Response(text="<html>Please log in to the network</html>",
                                content_type="text/html")
        request._read_bytes = json.dumps(body).encode()  # read again by the real handler
        return await super().query(request)


def test_an_answer_that_is_no_json_is_tried_again_not_an_empty_window(
        fixtures: Path, brokers: str, tap: KafkaTap, tmp_path: Path) -> None:
    """A 200 whose body is no JSON object with ``data`` read as an empty last page: the
    window went into ``windows_done`` with no video, and no later run asked it again. It is
    tried again like a 5xx, and a hashtag that never gets an answer is an error whose
    windows a restart asks again."""
    data, _ = videos(fixtures)
    fake = HtmlResearchAPI({"london": data["london"]}, html=2)
    fake.revoke_after = fake.quota_at = 10**6
    name = collector_name("tt")
    state = tmp_path / "state.json"
    with LocalServer(fake.app()) as server:
        args = live_args(
            "tiktok", "--brokers", brokers, "--collector", name, "--hashtags", "london",
            "paris", "--since", str(SINCE), "--until", str(UNTIL), "--research-api-url",
            server.url, "--client-key", KEY, "--client-secret", SECRET, "--state",
            str(state), "--retries", "2", "--backoff-base", "0.01", "--backoff-max", "0.02")
        assert args.live_run(args) == 0
    runs = [json.loads(line) for line in
            Path(f"{state}.runs.jsonl").read_text().splitlines()]
    assert [(r["target"], r["outcome"], r["posts"]) for r in runs] == [
        ("#london", "ok", 12), ("#paris", "error", 0)], runs
    assert "not JSON" in runs[1]["error"]
    assert json.loads(state.read_text())["hashtags"]["paris"].get("windows_done") == []


def test_a_long_hashtag_has_an_id_list_a_disk_can_hold(tmp_path: Path) -> None:
    """``<query>_post_ids.txt`` of a long hashtag (90 letters of Devanagari are 270 bytes;
    a file name holds 255) failed with 'File name too long' after its first page was
    published: the hashtag ended as an error at that page in every run, the rest of it
    never collected. A long name keeps its beginning and a hash; a short one is unchanged;
    the lists read back as they were written."""
    from connectors.collect.tiktok import IdLists

    long_a, long_b = "भारत" * 22 + "क", "भारत" * 22 + "ख"
    lists = IdLists(tmp_path)
    lists.add(long_a, ["1", "2"])
    lists.add(long_b, ["3"])
    lists.add("london", ["4"])
    assert (tmp_path / "london_post_ids.txt").read_text() == "4\n"
    assert all(len(p.name.encode()) <= 255 for p in tmp_path.iterdir())
    again = IdLists(tmp_path)
    assert again.published == {"1", "2", "3", "4"}
    again.add(long_a, ["2", "5"])  # 2 is listed already: not twice
    texts = sorted(p.read_text() for p in tmp_path.iterdir())
    assert texts == ["1\n2\n5\n", "3\n", "4\n"], texts


class BrokenItemsAPI(FakeResearchAPI):
    """London's first page also holds a video with id 0, one without an id and an item
    that is no object at all."""

    async def query(self, request: web.Request) -> web.Response:
        resp = await super().query(request)
        answer = json.loads(resp.text or "{}")
        data = answer.get("data")
        if isinstance(data, dict) and not (await request.json()).get("cursor"):
            data["videos"] = [*data["videos"], {"id": 0, "username": "zero"},
                              {"username": "no-id"}, "oops"]
        return web.json_response(answer, status=resp.status)


def test_videos_that_cannot_be_posts_are_dead_letters(fixtures: Path, brokers: str,
                                                     tap: KafkaTap, tmp_path: Path) -> None:
    """A video with an impossible id, one without id and an item that is no object were a
    warning (or nothing) and gone; the README promises each a dead letter with its reason
    and content, as every collector keeps what it cannot publish."""
    data, _ = videos(fixtures)
    fake = BrokenItemsAPI({"london": data["london"]})
    fake.revoke_after = fake.quota_at = 10**6
    name = london_batch(fake, brokers, tmp_path)
    tap.settle(0.5)
    dead = tap.dead(name)
    assert len(dead) == 3, dead
    raws = sorted(d["raw"] for d in dead)
    assert any('"zero"' in r for r in raws) and any('"no-id"' in r for r in raws)
    assert any("oops" in r for r in raws)
    assert all(d["reason"] for d in dead)
    assert len(tap.posts(name)) == 5
