"""``shoal serve`` in a real headless browser (Debian's chromium, driven by playwright).

The data dir is made by the real pipeline (generated posts with hashtags and pictures from
a loopback picture server, and one unreadable input that becomes a dead letter). The page
must load without a console error, show the numbers ``shoal query`` gives over the same
data dir, show a newly sealed hour after a refresh, and keep working (error boxes) when
its queries fail or are too slow.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from PIL import Image

from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.publisher import ensure_topics
from shoal.app.cli import main
from shoal.fetch.policy import FetchConfig
from tests.images import PictureServer
from tests.pipeline import publish, run_flow
from tests.posts import Post, write_pages

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
T0 = datetime(2024, 5, 2, 10, 0, tzinfo=UTC)
WAIT_MS = 30_000


def shoal_query(data_dir: Path, sql: str) -> list[dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["query", "--data-dir", str(data_dir), "--format", "json", sql]) == 0
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def feed(server: PictureServer, hours: range, folder: Path, name: str) -> Path:
    pictures = ("original.png", "q60.jpg", "stranger.jpg")
    posts = [Post(T0 + timedelta(hours=h, minutes=7 * k), f"user{k % 4}", f"post {h}/{k}",
                  ("Paris", "velo")[: 1 + k % 2] + (("spread",) if k % 3 == 0 else ()),
                  (server.url(pictures[k % 3]),) if k < 3 else (), seq=100 * h + k)
             for h in hours for k in range(8)]
    return write_pages(folder / f"{name}.jsonl", posts)


@pytest.fixture(scope="module")
def pictures() -> Iterator[PictureServer]:
    with PictureServer() as server:
        yield server


def run_pipeline(out: Path, server: PictureServer, hours: range, tag: str) -> None:
    folder = out.parent / f"feeds-{tag}"
    files = [("a", feed(server, hours, folder, "a")), ("b", feed(server, hours[:1], folder, "b"))]
    fetch = FetchConfig(resolve={"img.test": "127.0.0.1"}, throttle=0.0, retries=1)
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, 2)
        publish(broker.bootstrap, files)
        # One message no reader understands: a dead letter for the page to count.
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        producer.send("shoal.posts", key=b"twitter:1", value=b"{not json",
                      headers=[("format", b"twitter-v2"), ("collector", b"a")])
        producer.flush()
        producer.close()
        run_flow(broker.bootstrap, out, media=True, fetch=fetch)


@pytest.fixture(scope="module")
def data_dir(pictures: PictureServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "data"
    run_pipeline(out, pictures, range(0, 2), "first")
    return out


class Served:
    """``shoal serve`` as a child process; ``url`` from its first line of output."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shoal", "serve", "--data-dir", str(data_dir), "--port", "0",
             "--refresh", "0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        first = lines.get(timeout=60)
        assert first.startswith("serving http://127.0.0.1:"), first
        self.url = first.split()[1]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(url)
    page.wait_for_selector('body[data-generation="1"]')
    return page, problems


def table_rows(page: Any, ident: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = page.eval_on_selector_all(
        f"#{ident} tbody tr",
        "trs => trs.map(tr => Object.fromEntries([...tr.cells].map("
        "c => [c.dataset.col, c.textContent])))")
    return rows


def test_page_shows_what_shoal_query_says_and_follows_new_hours(
    data_dir: Path, pictures: PictureServer, browser: Any, tmp_path: Path,
) -> None:
    served = Served(data_dir)
    try:
        page, problems = open_page(browser, served.url)

        sealed = shoal_query(data_dir, "SELECT platform, count(*) AS hours, sum(total) AS posts "
                                       "FROM reports GROUP BY platform ORDER BY platform")
        assert [(r["platform"], str(r["hours"]), str(r["posts"])) for r in sealed] == [
            (r["platform"], r["hours sealed"], r["posts"]) for r in table_rows(page, "sealed")]
        assert sealed == [{"platform": "twitter", "hours": 2, "posts": 16}]

        newest = shoal_query(data_dir, "SELECT hour, collectors['a'] AS a, collectors['b'] AS b,"
                                       " total, diff FROM reports ORDER BY hour_start DESC")
        shown = table_rows(page, "newest")
        assert [(r["hour"], str(r["a"]), str(r["b"]), str(r["total"]), str(r["diff"]))
                for r in newest] == [(r["hour"], r["a"], r["b"], r["total"], r["diff"])
                                     for r in shown]

        day_tags = shoal_query(
            data_dir, "SELECT lower(t) AS tag, count(DISTINCT id) AS posts FROM posts, "
                      "unnest(string_split(hashtags, '|')) AS u(t) WHERE t <> '' "
                      "AND day = '2024-05-02' GROUP BY ALL ORDER BY posts DESC, tag")
        assert [(f"#{r['tag']}", str(r["posts"])) for r in day_tags] == [
            (r["hashtag"], r["posts"]) for r in table_rows(page, "hashtags-day")]
        hour_tags = shoal_query(
            data_dir, "SELECT lower(t) AS tag, count(DISTINCT id) AS posts FROM posts, "
                      "unnest(string_split(hashtags, '|')) AS u(t) WHERE t <> '' "
                      "AND day = '2024-05-02' AND hour = '11' GROUP BY ALL "
                      "ORDER BY posts DESC, tag")
        assert [(f"#{r['tag']}", str(r["posts"])) for r in hour_tags] == [
            (r["hashtag"], r["posts"]) for r in table_rows(page, "hashtags-hour")]

        outcomes = shoal_query(
            data_dir, "SELECT count(*) AS n FROM media WHERE coalesce(error, '') = '' "
                      "AND fetched_at IS NOT NULL")
        shown_outcomes = table_rows(page, "outcomes")
        assert shown_outcomes == [{"host": "img.test", "outcome": "ok",
                                   "media": str(outcomes[0]["n"])}]

        dead = table_rows(page, "deadletters")
        assert len(dead) == 1 and dead[0]["reason"] == "invalid JSON"
        assert dead[0]["dead letters"] == "1"

        # The gallery: two groups (original + its JPEG copy; the stranger), thumbnails drawn.
        cards = page.eval_on_selector_all(
            "#s-images .card", "cs => cs.map(c => [Number(c.dataset.posts), "
            "c.querySelector('img') && c.querySelector('img').naturalWidth])")
        assert [posts for posts, _ in cards] == [4, 2]
        assert all(width and width > 0 for _, width in cards)
        # Charts drawn by the server, loaded by the browser.
        page.wait_for_function(
            "() => [...document.querySelectorAll('img.chart')].every(i => i.naturalWidth > 0)")

        # A new hour is sealed while the page is open: it shows after a refresh.
        run_pipeline(data_dir, pictures, range(3, 4), "second")
        page.click("#refresh")
        page.wait_for_selector('body[data-generation="2"]')
        hours = [r["hour"] for r in table_rows(page, "newest")]
        assert hours == ["13", "11", "10"]
        assert table_rows(page, "sealed")[0]["hours sealed"] == "3"

        shot = tmp_path / "serve.png"
        page.screenshot(path=str(shot), full_page=True)
        with Image.open(shot) as img:
            img.load()
            assert img.format == "PNG" and img.size[0] == 1200 and img.size[1] >= 900
        assert problems == []
    finally:
        served.stop()


def test_failing_and_slow_queries_show_error_boxes(data_dir: Path, browser: Any,
                                                   tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    # (Without its catalog file, whose views name the original's absolute paths: the
    # copy is read through views made on the fly over its own Parquet files.)
    shutil.copytree(data_dir, broken,
                    ignore=shutil.ignore_patterns("media", "_recovery", "shoal.duckdb"))
    bad = broken / "_parquet/media/platform=twitter/day=2024-05-02/hour=99/data.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"this is not parquet")
    served = Served(broken)
    try:
        page, problems = open_page(browser, served.url)
        assert page.locator("#s-media .error").count() == 1
        assert page.locator("#s-images .error").count() == 1
        assert page.locator("#s-hours .error").count() == 0
        assert table_rows(page, "sealed")  # the other sections carry on
        assert problems == []
    finally:
        served.stop()
    slow = Served(data_dir, "--query-timeout", "0.000001")
    try:
        page, problems = open_page(browser, slow.url)
        for section in ("hours", "hashtags", "images", "media"):
            box = page.locator(f"#s-{section} .error")
            assert box.count() == 1 and "took longer than" in box.inner_text()
        page.click("#refresh")  # still alive
        page.wait_for_selector('body[data-generation="2"]')
        assert problems == []
    finally:
        slow.stop()


HOSTILE = ["x<script>window.pwn=1</script>", '"><img src=x onerror="window.pwn=2">',
           "</style><script>window.pwn=3</script>", "javascript:window.pwn=4", "nul\x00ctl\x01",
           "rtl\u202eevil", "w" * 3000]


def hostile_pages(folder: Path) -> list[Path]:
    """The three ``--html`` pages, made by report_html from hostile strings (no pipeline)."""
    from shoal.app import report_html as html
    from shoal.day_report import HourRow, build
    from shoal.hashtags import HashtagCount, HashtagTable
    from shoal.spread import ImageGroup

    dot = html.data_uri(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/gif")
    tags = HashtagTable(9, tuple(HashtagCount(t, 9 - i, 0.5) for i, t in enumerate(HOSTILE)))
    day = build("2024-05-02", [HourRow("twitter", "10", int(T0.timestamp()),
                                       {c: 3 for c in HOSTILE}, 3, 0, 0)],
                {reason: i + 1 for i, reason in enumerate(HOSTILE)})
    groups = [ImageGroup(2, 2, (p,), p, p, tuple((t, 2) for t in HOSTILE), 1, 1, p, "ab" * 32,
                         ("twitter:1",)) for p in HOSTILE]
    pages = {"hashtags": html.hashtag_table(tags), "day": html.day_table(day),
             "images": html.gallery(groups, {"ab" * 32: dot})
             + html.table(html.GROUP_HEADER, html.group_rows(groups), "groups")}
    out = []
    for name, body in pages.items():
        path = folder / f"{name}.html"
        path.write_text(html.page(f"{name} {HOSTILE[0]} {HOSTILE[-2]}", body), encoding="utf-8")
        out.append(path)
    return out


def test_hostile_strings_in_the_html_pages_stay_text(browser: Any, tmp_path: Path) -> None:
    """Hashtags, collectors, dead-letter reasons and paths are other people's text: no script
    runs, and a 3,000-character hashtag wraps instead of widening the page to 27,000 px."""
    dialogs: list[str] = []

    def dismiss(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    for path in hostile_pages(tmp_path):
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("dialog", dismiss)
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        assert page.evaluate("window.pwn") is None and dialogs == [], path.name
        assert HOSTILE[0] in page.title()
        assert page.evaluate("document.documentElement.scrollWidth") <= 1200, path.name
        page.close()
