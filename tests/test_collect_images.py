"""``shoal collect images`` through ddgs against duckduckgo.com of our own.

ddgs sends everything through primp (Rust): Python's resolver and CA settings do not reach
it, so the test hands it what it honours, a proxy (a CONNECT proxy on loopback whose tunnels
end at our TLS server) and a CA file (its ``verify``). The host name is still checked
against the test CA's certificate, so the search really went to "duckduckgo.com".
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest
from aiohttp import web

from shoal.model import RawPost
from shoal.normalise.images import image_id
from tests.live_helpers import KafkaTap, collector_name, live_args
from tests.pipeline import all_rows, run_flow
from tests.tls import ConnectProxy, TestCA, TlsServer

PIXEL = "data:image/png;base64," + base64.b64encode(
    bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                  "1f15c4890000000d49444154789c6300010000050001b0a0d3c90000000049454e44ae426082")
).decode()


class FakeDuckDuckGo:
    """The two requests ddgs makes per image search: the page with the ``vqd`` token, then
    ``i.js`` with results shaped as DuckDuckGo's (title, image, thumbnail, url, size, source)."""

    def __init__(self) -> None:
        self.searches: list[str] = []
        self.limited: set[str] = {"dogs"}  # answered 429 once

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.page)
        app.router.add_get("/i.js", self.results)
        return app

    async def page(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        return web.Response(text=f'<html><script>vqd="4-{len(q)}-token";</script></html>',
                            content_type="text/html")

    async def results(self, request: web.Request) -> web.Response:
        q = request.query["q"]
        self.searches.append(q)
        if q in self.limited:
            self.limited.discard(q)
            return web.Response(status=429, text="rate limited")
        if q == "nothing":
            return web.json_response({"results": [], "next": None})
        items = [{"title": f"{q} picture {n}", "image": f"https://img.example.org/{q}/{n}.jpg",
                  "thumbnail": f"https://tse.mm.bing.net/th?id={q}{n}",
                  "url": f"https://pages.example.org/{q}/{n}.html", "height": 600 + n,
                  "width": 800, "source": "Bing"} for n in range(3)]
        if q == "pixel":
            items[0]["image"] = PIXEL
        return web.json_response({"results": items, "next": "i.js?q=..."})


def test_three_keywords_one_limited_one_data_url(brokers: str, tap: KafkaTap,
                                                 tmp_path: Path) -> None:
    fake = FakeDuckDuckGo()
    ca = TestCA(tmp_path / "ca", ["duckduckgo.com"])
    name = collector_name("img")
    (tmp_path / "queries.csv").write_text("keyword\ncats\ndogs\npixel\nnothing\n")
    with TlsServer(fake.app(), ca) as server, ConnectProxy(server.port) as proxy:
        args = live_args("images", "--keywords-file", str(tmp_path / "queries.csv"),
                         "--brokers", brokers, "--collector", name, "--proxy", proxy.url,
                         "--ca-file", str(ca.ca_file), "--retries", "1", "--backoff-base",
                         "0.05", "--run-log", str(tmp_path / "runs.jsonl"))
        assert args.live_run(args) == 0
        assert set(proxy.tunnels) == {"duckduckgo.com"}
    assert fake.searches.count("dogs") == 2  # refused once, then answered

    tap.settle(1.0)
    posts = tap.posts(name)
    by_query: dict[str, list[dict[str, object]]] = {}
    for p in posts:
        by_query.setdefault(p["payload"]["query"], []).append(p["payload"])
    assert sorted(by_query) == ["cats", "dogs", "pixel"]
    assert all(len(v) == 3 for v in by_query.values())
    assert any(p["image"] == PIXEL and p["id"] == image_id(PIXEL, "pixel")
               for p in by_query["pixel"])

    runs = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [(r["target"], r["outcome"], r["posts"]) for r in runs] == [
        ("cats", "ok", 3), ("dogs", "ok", 3), ("pixel", "ok", 3), ("nothing", "failed", 0)]

    data = tmp_path / "data"
    run_flow(brokers, data)
    rows = all_rows(data, "images")
    assert len(rows) == 9
    pixel = next(r for r in rows if r["id"] == image_id(PIXEL, "pixel"))
    assert pixel["media_urls"] == PIXEL and pixel["text"] == "pixel picture 0"


class OddDuckDuckGo(FakeDuckDuckGo):
    """Answers ``untitled`` with results that have no title (DuckDuckGo leaves it out at
    times), on which ddgs's own ranking raises a TypeError."""

    async def results(self, request: web.Request) -> web.Response:
        if request.query["q"] == "untitled":
            self.searches.append("untitled")
            return web.json_response({"results": [
                {"image": "https://img.example.org/u/0.jpg", "url": "https://p.example.org/u",
                 "thumbnail": "https://tse.mm.bing.net/th?id=u0", "height": 1, "width": 1,
                 "source": "Bing"}], "next": None})
        return await super().results(request)


def test_bom_header_case_repeats_and_a_library_error(brokers: str, tap: KafkaTap,
                                                     tmp_path: Path) -> None:
    """A spreadsheet's CSV (a BOM before its header, CRLF), a keyword twice in two cases, and
    a keyword on which ddgs itself breaks: the header is no keyword, ``cats`` is searched
    once, the broken keyword is one run-log line and the batch goes on. The run log's
    folder does not exist yet: it is made."""
    fake = OddDuckDuckGo()
    fake.limited = set()
    ca = TestCA(tmp_path / "ca", ["duckduckgo.com"])
    name = collector_name("img")
    (tmp_path / "queries.csv").write_bytes(
        "\ufeffKeyword\r\nuntitled\r\ncats\r\n  Cats \r\n\r\n".encode())
    with TlsServer(fake.app(), ca) as server, ConnectProxy(server.port) as proxy:
        args = live_args("images", "--keywords-file", str(tmp_path / "queries.csv"),
                         "--brokers", brokers, "--collector", name, "--proxy", proxy.url,
                         "--ca-file", str(ca.ca_file), "--retries", "0",
                         "--run-log", str(tmp_path / "logs" / "new" / "runs.jsonl"))
        assert args.live_run(args) == 0
    assert fake.searches == ["untitled", "cats"]
    runs = [json.loads(line) for line in
            (tmp_path / "logs" / "new" / "runs.jsonl").read_text().splitlines()]
    assert [(r["target"], r["outcome"], r["posts"]) for r in runs] == [
        ("untitled", "error", 0), ("cats", "ok", 3)]
    assert "TypeError" in runs[0]["error"]
    tap.settle(0.5)
    assert sorted(p["payload"]["query"] for p in tap.posts(name)) == ["cats"] * 3


def test_keywords_file_not_utf8_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "q.csv").write_bytes(b"caf\xe9\n")
    args = live_args("images", "--keywords-file", str(tmp_path / "q.csv"), "--brokers",
                     "127.0.0.1:1", "--collector", "img")
    assert args.live_run(args) == 2


def test_names_that_are_no_utf8_are_one_line_before_anything(
        caplog: pytest.LogCaptureFixture) -> None:
    """A keyword or profile given as Latin-1 bytes on the command line (a shell in another
    locale, a script) is a str with lone surrogates: the images batch died with a logging
    traceback and ``TypeError: str is not valid UTF-8``, and the Instagram batch died at that
    profile (its state could not be written), the profiles after it never asked. Both now
    refuse it in one line, exit 2, as they refuse a keywords or profiles file that is not
    UTF-8; no log line of any field breaks the JSON logs either."""
    from shoal.logs import JsonFormatter

    for argv in (("images", "caf\udce9", "cats"),
                 ("instagram", "--profiles", "b\udcffob", "alice")):
        args = live_args(*argv, "--brokers", "127.0.0.1:1", "--collector", "c")
        with caplog.at_level(logging.ERROR, logger="shoal.collect"):
            caplog.clear()
            assert args.live_run(args) == 2, argv
        failed = [r for r in caplog.records if r.getMessage() == "collector failed"]
        assert len(failed) == 1 and "not UTF-8" in failed[0].__dict__["fields"]["error"], argv
    record = logging.LogRecord("shoal.collect", logging.INFO, "x", 1, "target done", (), None)
    record.__dict__["fields"] = {"target": "caf\udce9"}
    line = json.loads(JsonFormatter().format(record))
    assert line["target"].startswith("caf") and line["msg"] == "target done"


class ImagelessDuckDuckGo(FakeDuckDuckGo):
    """Answers ``blank`` with one result whose image URL is empty, beside two good ones."""

    async def results(self, request: web.Request) -> web.Response:
        if request.query["q"] == "blank":
            self.searches.append("blank")
            items = [{"title": f"blank {n}", "image": f"https://img.example.org/b/{n}.jpg",
                      "thumbnail": "", "url": f"https://p.example.org/{n}", "height": 1,
                      "width": 1, "source": "Bing"} for n in range(2)]
            items.append({"title": "no picture", "image": "", "thumbnail": "",
                          "url": "https://p.example.org/none", "height": 1, "width": 1,
                          "source": "Bing"})
            return web.json_response({"results": items, "next": None})
        return await super().results(request)


def test_a_result_without_an_image_is_a_dead_letter(brokers: str, tap: KafkaTap,
                                                   tmp_path: Path) -> None:
    """A result without an image URL cannot be a post: it was dropped without a word; it is
    a dead letter with its reason and content, as the README promises for every input."""
    fake = ImagelessDuckDuckGo()
    ca = TestCA(tmp_path / "ca", ["duckduckgo.com"])
    name = collector_name("img")
    with TlsServer(fake.app(), ca) as server, ConnectProxy(server.port) as proxy:
        args = live_args("images", "blank", "--brokers", brokers, "--collector", name,
                         "--proxy", proxy.url, "--ca-file", str(ca.ca_file), "--retries", "0")
        assert args.live_run(args) == 0
    tap.settle(0.5)
    assert len(tap.posts(name)) == 2
    dead = tap.dead(name)
    assert len(dead) == 1 and "no picture" in dead[0]["raw"] and "image" in dead[0]["reason"]


def test_files_the_batch_will_write_are_checked_before_it_starts(tmp_path: Path) -> None:
    """A --run-log that is a folder, a --state or --ids-dir under a file: the images batch
    searched its first keyword, published it, then died (exit 1) writing the run log; the
    others alike after their first target. Each is now one line, exit 2, before anything
    is asked (the broker here does not even exist)."""
    (tmp_path / "folder.jsonl").mkdir()
    (tmp_path / "file").write_text("")
    cases = [
        ("images", "kw", "--run-log", str(tmp_path / "folder.jsonl")),
        ("instagram", "--profiles", "alice", "--state", str(tmp_path / "file" / "s.json")),
        ("instagram", "--profiles", "alice", "--state", str(tmp_path / "folder.jsonl")),
        ("tiktok", "--users", "alice", "--ids-dir", str(tmp_path / "file")),
        ("tiktok", "--users", "alice", "--run-log", str(tmp_path / "folder.jsonl")),
    ]
    for argv in cases:
        args = live_args(*argv, "--brokers", "127.0.0.1:1", "--collector", "c")
        assert args.live_run(args) == 2, argv


def test_an_image_two_keywords_found_is_a_post_of_each() -> None:
    """The dataflow dedupes posts by id: were the id the URL's alone, the second keyword's
    find would be dropped as a copy of the first, and its folder would lack the image."""
    from connectors.collect.images import result_post

    url = "https://img.example/cat.jpg"
    cats, pets = (result_post(k, {"image": url, "title": "t"}, "2026-12-01T10:00:00Z")
                  for k in ("cats", "pets"))
    assert isinstance(cats, RawPost) and isinstance(pets, RawPost)
    assert cats.id != pets.id and (cats.payload["query"], pets.payload["query"]) == ("cats", "pets")
    again = result_post("cats", {"image": url}, "2026-12-02T10:00:00Z")
    assert isinstance(again, RawPost) and again.id == cats.id  # found again: the same post
