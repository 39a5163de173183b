"""The live page of ``shoal serve``: an aiohttp app that reads the catalog and never writes.

The page is a skeleton of sections; a small script (shipped here, no CDN) fetches each
section as an HTML fragment from ``/section/<name>`` and refreshes them every few seconds
and on demand. Every section is one or a few queries on a fresh read-only DuckDB
connection (``connectors.store.report_data.readonly``), run in a thread with a time limit:
a slow query is interrupted, and a slow or failing one becomes an error box in its own
section while the others, and the page, carry on. Charts are drawn by the server
(``shoal.charts``, SVG); thumbnails are made on the fly from the stored files.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from aiohttp import web

from connectors.store import report_data
from connectors.store.catalog import has_sealed
from connectors.store.thumbs import thumbnail
from shoal.app import report_html as html
from shoal.charts import hashtag_chart
from shoal.day_report import collector_column
from shoal.hashtags import HashtagTable, cooccurrence
from shoal.spread import image_groups

T = TypeVar("T")
SECTIONS = ("hours", "hashtags", "images", "media", "deadletters")
TITLES = {
    "hours": "Hours sealed",
    "hashtags": "Top hashtags",
    "images": "Images that spread",
    "media": "Media fetch outcomes per host",
    "deadletters": "Dead letters per reason",
}
SHA = re.compile(r"[0-9a-f]{64}")


class SectionError(Exception):
    """A section could not be made; its message goes into the section's error box."""


class NothingSealed(Exception):
    """No hour is sealed in the data dir yet, so the catalog has no views to ask.

    ``shoal serve`` is started beside a new collection as often as over an old one; until
    the first seal its sections say so instead of DuckDB's "Table ... does not exist".
    """


NOTHING_SEALED = '<p class="muted">no hour sealed yet</p>'


@dataclass(frozen=True)
class ServeConfig:
    data_dir: Path
    refresh: float = 10.0  # seconds between refreshes in the browser
    query_timeout: float = 10.0  # seconds a section's queries may take
    top: int = 10
    distance: int = 8
    groups: int = 12
    listen: str = "127.0.0.1"  # --host: names other than this and addresses are refused


SCRIPT = """
"use strict";
const sections = JSON.parse(document.body.dataset.sections);
const every = Number(document.body.dataset.refresh) * 1000;
let busy = false;
async function loadSection(name) {
  const box = document.querySelector(`#s-${name} .body`);
  try {
    const resp = await fetch(`section/${name}`, {cache: "no-store"});
    box.innerHTML = await resp.text();
  } catch (err) {
    box.innerHTML = `<div class="error" role="alert">cannot reach the server (${err})</div>`;
  }
}
async function refresh() {
  if (busy) return;
  busy = true;
  try {
    await Promise.all(sections.map(loadSection));
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    document.body.dataset.generation = String(Number(document.body.dataset.generation) + 1);
  } finally {
    busy = false;
  }
}
document.getElementById("refresh").addEventListener("click", refresh);
refresh();
if (every > 0) setInterval(refresh, every);
"""


def utf8(text: str) -> str:
    """``text`` as a UTF-8 page can carry it.

    A file name that is not UTF-8 (``caf\\xe9``, Latin-1) comes from the OS with a surrogate
    for each such byte, which a response cannot encode: a data dir so named made the page a
    500, and an error naming such a file its section. They show as U+FFFD.
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def shown(path: Path) -> str:
    return utf8(str(path))


def _page(config: ServeConfig) -> str:
    sections = "".join(
        f'<section id="s-{name}"><h2>{TITLES[name]}</h2><div class="body">'
        f'<p class="muted">loading…</p></div></section>' for name in SECTIONS)
    names = "[" + ",".join(f"&quot;{n}&quot;" for n in SECTIONS) + "]"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<link rel="icon" href="data:,">'
        f"<title>shoal — {html.escape(shown(config.data_dir))}</title>"
        f"<style>{html.STYLE}</style></head>"
        f'<body data-sections="{names}" data-refresh="{config.refresh:g}" data-generation="0">'
        f"<h1>shoal · {html.escape(shown(Path(config.data_dir.name or config.data_dir)))}</h1>"
        '<p class="muted">read-only view of the catalog; updated <span id="updated">—</span> '
        '<button id="refresh" type="button">Refresh</button></p>'
        f'{sections}<script src="page.js"></script></body></html>\n'
    )


def host_name(header: str) -> str:
    """The name in a Host header, without port, brackets, case or a final dot."""
    name = header.strip()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    return name.lower().rstrip(".")


def host_allowed(header: str, listen: str, names: tuple[str, ...] = ()) -> bool:
    """Whether a request naming ``header`` is for this server, not for a rebound name.

    A page at evil.example whose DNS name is re-pointed at 127.0.0.1 (DNS rebinding) is
    same-origin with it in the visitor's browser, which compares names, not addresses: a
    server answering every Host header let such a page read all of it. A rebinding needs a
    name, so addresses pass; of names, ``localhost``, the ``--host`` one and ``names`` (the
    machine's, when listening beyond it) pass.
    """
    name = host_name(header)
    if not name:
        return False
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return True
    return name in {"localhost", host_name(listen), *(host_name(n) for n in names)}


def _loopback(listen: str) -> bool:
    try:
        return ipaddress.ip_address(host_name(listen)).is_loopback
    except ValueError:
        return host_name(listen) == "localhost"


class Site:
    """The handlers, a thread pool for the queries, and the page's configuration."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="shoal-serve")

    async def query(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``work`` on a fresh read-only connection in a thread, within the time limit."""
        box: dict[str, duckdb.DuckDBPyConnection] = {}

        def run() -> T:
            if not has_sealed(self.config.data_dir):
                raise NothingSealed()
            con = report_data.readonly(self.config.data_dir)
            box["con"] = con
            try:
                return work(con)
            finally:
                con.close()

        def stop() -> None:
            con = box.get("con")
            if con is not None:
                with contextlib.suppress(Exception):
                    con.interrupt()

        return await self.in_time(run, stop)

    async def in_time(self, run: Callable[[], T], stop: Callable[[], None] = lambda: None) -> T:
        """``run()`` in a thread, given up (``stop()`` called) after the query time limit.

        Every section goes through here, the catalog's and the dead letters' (files): one
        that never answered held the browser's refresh, which waits for all, so no section
        refreshed again.
        """
        future = asyncio.get_running_loop().run_in_executor(self.pool, run)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.config.query_timeout)
        except TimeoutError:
            stop()
            raise SectionError(
                f"the query took longer than {self.config.query_timeout:g} s and was stopped"
            ) from None

    # -- sections -------------------------------------------------------------------------

    async def hours(self) -> str:
        def work(con: duckdb.DuckDBPyConnection) -> tuple[Any, Any]:
            return report_data.sealed_per_platform(con), report_data.latest_hours(con, 24)

        per_platform, latest = await self.query(work)
        if not per_platform:
            return NOTHING_SEALED
        collectors = sorted({c for h in latest for c in h["collectors"]})
        rows = [(h["platform"], h["day"], h["hour"],
                 *(h["collectors"].get(c, 0) for c in collectors), h["total"], h["diff"],
                 f"{100.0 * h['diff'] / h['total']:.2f}" if h["total"] else "0.00", h["late"])
                for h in latest]
        return (html.table(("platform", "hours sealed", "posts"), per_platform, "sealed")
                + "<h3>Newest hours</h3>"
                + html.table(("platform", "day", "hour", *map(collector_column, collectors),
                              "total", "diff", "diff %", "late"), rows, "newest", text_columns=3))

    async def _hashtags(self, scope: str) -> tuple[str, HashtagTable | None]:
        top = self.config.top

        def work(con: duckdb.DuckDBPyConnection) -> tuple[str, HashtagTable | None]:
            newest = report_data.newest_hour(con)
            if newest is None:
                return "", None
            day, hour = newest
            selection = report_data.PostFilter(day=day, hour=hour if scope == "hour" else None)
            label = f"{day} {hour}:00" if scope == "hour" else day
            return label, cooccurrence(report_data.hashtag_posts(con, selection), top=top)

        return await self.query(work)

    async def hashtags(self) -> str:
        parts = []
        for scope, heading in (("hour", "Last sealed hour"), ("day", "Its day")):
            label, table = await self._hashtags(scope)
            if table is None:
                return NOTHING_SEALED
            stamp = int(time.time())
            parts.append(
                f'<div class="col"><h3>{heading}: {html.escape(label)}</h3>'
                f'<img class="chart" alt="top hashtags ({scope})" width="500" height="300" '
                f'src="chart/hashtags-{scope}.svg?t={stamp}">'
                + html.hashtag_table(table, f"hashtags-{scope}") + "</div>")
        return '<div class="gallery">' + "".join(parts) + "</div>"

    async def images(self) -> str:
        distance, groups = self.config.distance, self.config.groups

        def work(con: duckdb.DuckDBPyConnection) -> Any:
            return image_groups(report_data.image_uses(con, report_data.PostFilter()), distance,
                                groups)

        found = await self.query(work)
        thumbs = {g.representative_sha256: f"thumb/{g.representative_sha256}" for g in found}
        return html.gallery(found, thumbs)

    async def media(self) -> str:
        rows = await self.query(report_data.fetch_outcomes)
        if not rows:
            return '<p class="muted">no media rows yet</p>'
        return html.table(("host", "outcome", "media"), rows, "outcomes", text_columns=2)

    async def deadletters(self) -> str:
        data_dir = self.config.data_dir
        counts = await self.in_time(lambda: report_data.deadletters_by_reason(data_dir, None))
        if not counts:
            return '<p class="muted">no dead letters</p>'
        rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return html.table(("reason", "dead letters"), rows, "deadletters")

    # -- handlers -------------------------------------------------------------------------

    async def index(self, _request: web.Request) -> web.Response:
        return web.Response(text=_page(self.config), content_type="text/html")

    async def script(self, _request: web.Request) -> web.Response:
        return web.Response(text=SCRIPT, content_type="application/javascript")

    async def section(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in SECTIONS:
            raise web.HTTPNotFound()
        make: Callable[[], Awaitable[str]] = getattr(self, name)
        try:
            body = await make()
        except NothingSealed:
            body = NOTHING_SEALED
        except SectionError as exc:
            body = html.error_box(str(exc))
        except Exception as exc:  # a failing query must not take the page down
            first = str(exc).splitlines()[0] if str(exc) else ""
            body = html.error_box(f"{type(exc).__name__}: {first}")
        return web.Response(text=utf8(body), content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def chart(self, request: web.Request) -> web.Response:
        scope = request.match_info["scope"]
        if scope not in ("hour", "day"):
            raise web.HTTPNotFound()
        try:
            label, table = await self._hashtags(scope)
        except NothingSealed:
            label, table = "(no hour sealed yet)", None
        except Exception as exc:
            raise web.HTTPServiceUnavailable(text=str(exc)) from None
        table = table or HashtagTable(0, ())
        svg = await asyncio.get_running_loop().run_in_executor(
            self.pool, lambda: hashtag_chart(table, f"Top hashtags {label}", "svg"))
        return web.Response(body=svg, content_type="image/svg+xml",
                            headers={"Cache-Control": "no-store"})

    async def thumb(self, request: web.Request) -> web.Response:
        sha = request.match_info["sha"]
        if not SHA.fullmatch(sha):
            raise web.HTTPNotFound()
        try:
            path = await self.query(lambda con: report_data.media_path(con, sha))
        except NothingSealed:
            raise web.HTTPNotFound() from None
        data = None
        if path:
            data = await asyncio.get_running_loop().run_in_executor(
                self.pool, thumbnail, self.config.data_dir, path)
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="image/jpeg",
                            headers={"Cache-Control": "max-age=3600"})

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def make_app(config: ServeConfig) -> web.Application:
    site = Site(config)
    names = () if _loopback(config.listen) else (socket.gethostname(),)

    @web.middleware
    async def check_host(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                         ) -> web.StreamResponse:
        if not host_allowed(request.headers.get("Host", ""), config.listen, names):
            name = utf8(host_name(request.headers.get("Host", "")))
            return web.Response(status=421, text=(
                f"shoal serve: {name!r} is not a name of this server (a guard against DNS "
                "rebinding): open it by its address, or start shoal serve with --host "
                "that name\n"))
        return await handler(request)

    app = web.Application(middlewares=[check_host])
    app.router.add_get("/", site.index)
    app.router.add_get("/page.js", site.script)
    app.router.add_get("/section/{name}", site.section)
    app.router.add_get("/chart/hashtags-{scope}.svg", site.chart)
    app.router.add_get("/thumb/{sha}", site.thumb)

    async def closing(_app: web.Application) -> None:
        site.close()

    app.on_cleanup.append(closing)
    return app
