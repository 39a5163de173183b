"""Media URLs that cannot be downloaded as they are: TikTok video pages resolved by yt-dlp,
expired or refused signed URLs resolved again from their post (yt-dlp, instaloader).

The libraries are unchanged: they reach our HTTPS servers on loopback (tests/fake_tiktok.py,
tests/fake_instagram.py) through the ``SHOAL_RESOLVE`` override and the test CA, and so
does the fetch engine for the CDN hosts.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from connectors.collect import resolve as name_override
from connectors.fetch.engine import Fetcher
from shoal.fetch.policy import FetchConfig, FetchResult
from shoal.fetch.resolve import (
    Plan,
    ResolveError,
    instagram_file,
    instagram_shortcode,
    plan_after,
    plan_before,
    signature_expired,
    signature_expiry,
    tiktok_page,
    ytdlp_file,
)
from tests import fake_instagram
from tests.fake_tiktok import CDN_HOST, PAGE_HOST, FakeTikTok, file_id, mp4_bytes
from tests.tls import TestCA, TlsServer

NOW = 1_733_400_000.0  # 2024-12-05
IG_CDN = "scontent-lhr8-1.cdninstagram.com"


# --- the pure rules ----------------------------------------------------------------------------


def test_tiktok_pages_are_recognised() -> None:
    assert tiktok_page("https://www.tiktok.com/@user.1/video/7301234567890123456") == (
        "user.1", "7301234567890123456")
    assert tiktok_page("https://www.tiktok.com/@/video/7301234567890123456?lang=en") == (
        "", "7301234567890123456")
    assert tiktok_page("https://m.tiktok.com/@a/video/1/") == ("a", "1")
    assert tiktok_page("https://www.tiktok.com/@user") is None
    assert tiktok_page(f"https://{CDN_HOST}/video/tos/x/1/") is None
    assert tiktok_page("https://evil.example/@a/video/1") is None


def test_signature_expiry_per_cdn() -> None:
    oe = format(int(NOW) - 60, "X")
    ig = f"https://{IG_CDN}/v/t51.29350-15/1_n.jpg?stp=dst-jpg&_nc_ht=x&oh=00_AfA&oe={oe}"
    assert signature_expiry(ig) == NOW - 60
    assert signature_expired(ig, NOW) and not signature_expired(ig, NOW - 61)
    tt = f"https://{CDN_HOST}/video/tos/a/b/c/?x-expires={int(NOW) + 5}&x-signature=abc"
    assert not signature_expired(tt, NOW) and signature_expired(tt, NOW + 5)
    assert signature_expiry(f"https://v19.tiktokcdn.com/x/?expire={int(NOW)}") == NOW
    # Another site's parameters of the same name mean nothing to us; garbage is no expiry.
    assert signature_expiry(f"https://example.org/a.jpg?oe={oe}&expire=1") is None
    assert signature_expiry(f"https://{IG_CDN}/a.jpg?oe=zz") is None
    assert signature_expiry("data:image/png;base64,AAAA") is None


def test_instagram_shortcode_matches_instaloader() -> None:
    import instaloader

    for mid in ("3828242469566363945", "1", "18446744073709551615"):
        assert instagram_shortcode(mid) == instaloader.Post.mediaid_to_shortcode(int(mid))
    assert instagram_shortcode("123_456") == instaloader.Post.mediaid_to_shortcode(123)
    assert instagram_shortcode("abc") == "" and instagram_shortcode(str(2**64)) == ""


def test_plans() -> None:
    page = "https://www.tiktok.com/@u/video/7301234567890123456"
    assert plan_before(page, {}, NOW) == Plan("page", "yt-dlp", page, "7301234567890123456")
    old = f"https://{IG_CDN}/a.jpg?oe={int(NOW) - 1:x}"
    meta = {"platform": "instagram", "post_id": "3828242469566363945", "position": 2,
            "kind": "video"}
    plan = plan_before(old, meta, NOW)
    assert plan is not None and plan.trigger == "expired" and plan.resolver == "instaloader"
    assert plan.page == "https://www.instagram.com/p/DUgpj5AkTkp/" and plan.position == 2
    assert plan.note() == "expired from https://www.instagram.com/p/DUgpj5AkTkp/"
    assert plan_before(old, {"platform": "twitter", "post_id": "1"}, NOW) is None
    assert plan_before(f"https://{IG_CDN}/a.jpg?oe={int(NOW) + 9:x}", meta, NOW) is None
    gone = plan_after(410, {"platform": "tiktok", "post_id": "7301234567890123456"})
    assert gone is not None and gone.trigger == "http 410"
    assert gone.page == "https://www.tiktok.com/@_/video/7301234567890123456"
    assert plan_after(404, meta) is None and plan_after(403, {}) is None


def test_file_choice_from_library_answers() -> None:
    info = {"url": "https://cdn/x.mp4", "http_headers": {"Referer": "p", "Cookie": "leak=1"}}
    assert ytdlp_file(info) == ("https://cdn/x.mp4", {"Referer": "p"})
    with pytest.raises(ResolveError):
        ytdlp_file({"formats": [{"url": "https://cdn/a.m4a", "vcodec": "none"}]})
    nodes = [(False, "https://cdn/0.jpg", ""), (True, "https://cdn/1.jpg", "https://cdn/1.mp4")]
    assert instagram_file(nodes, 1, "video") == "https://cdn/1.mp4"
    assert instagram_file(nodes, 1, "photo") == "https://cdn/1.jpg"
    assert instagram_file(nodes, 0, "") == "https://cdn/0.jpg"
    with pytest.raises(ResolveError, match="none at position 2"):
        instagram_file(nodes, 2, "photo")


# --- against the loopback servers ------------------------------------------------------------


@pytest.fixture
def net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """One HTTPS server per site under the test CA; the process's name lookups for their
    hosts sent to them, and restored afterwards."""
    hosts = [PAGE_HOST, CDN_HOST, *fake_instagram.HOSTS, IG_CDN]
    ca = TestCA(tmp_path / "ca", hosts)
    tiktok = FakeTikTok(videos={"7301234567890123456": "alice", "7301234567890123457": "bob",
                                "7301234567890123458": "carol"})
    instagram = fake_instagram.FakeInstagram({}, {})
    with TlsServer(tiktok.app(), ca) as tt, TlsServer(instagram.app(), ca) as ig:
        spec = ",".join([tt.resolve_spec([PAGE_HOST, CDN_HOST]),
                         ig.resolve_spec([*fake_instagram.HOSTS, IG_CDN])])
        for name, value in ca.client_env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv(name_override.ENV, spec)
        monkeypatch.setattr(socket, "getaddrinfo", socket.getaddrinfo)
        monkeypatch.setattr(name_override, "_installed", {})
        yield {"tiktok": tiktok, "instagram": instagram, "root": tmp_path / "root"}


def fetch_all(root: Path, config: FetchConfig,
              jobs: Sequence[tuple[str, dict[str, Any]]]) -> list[FetchResult]:
    async def main() -> list[FetchResult]:
        async with Fetcher(config, root) as fetcher:
            return list(await asyncio.gather(*(fetcher.fetch(u, m) for u, m in jobs)))

    return asyncio.run(main())


def test_pages_resolve_within_the_page_hosts_gap(net: dict[str, Any]) -> None:
    """T on www.tiktok.com holds between resolutions as the server saw them, and the file
    comes from the CDN with the page's cookie and Referer, stored as mp4."""
    fake: FakeTikTok = net["tiktok"]
    fake.unresolvable.add("7301234567890123458")
    t = 0.3
    config = FetchConfig(allow_private_networks=True, retries=0,
                         per_host={PAGE_HOST: (2, t), CDN_HOST: (4, 0.0)})
    pages = [f"https://www.tiktok.com/@{u}/video/{v}" for v, u in fake.videos.items()]
    results = fetch_all(net["root"], config, [(p, {"kind": "video"}) for p in pages])
    ok = {r.url: r for r in results if r.ok}
    assert len(ok) == 2, [r.error for r in results]
    for r in ok.values():
        assert r.path.endswith(".mp4") and r.mimetype == "video/mp4"
        assert r.final_url.startswith(f"https://{CDN_HOST}/video/tos/")
        assert r.resolved == f"page from {r.url}" and r.attempts == 2
        video_id = r.url.rsplit("/", 1)[1]
        assert (net["root"] / r.path).read_bytes() == mp4_bytes(video_id)
    (bad,) = [r for r in results if not r.ok]
    assert bad.error.startswith("resolve failed: ") and bad.resolved.startswith("page from ")
    assert fake.refused == []
    starts = sorted(s.start for s in fake.on(PAGE_HOST))
    assert len(starts) == 3
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= t, gaps


def test_other_spellings_of_a_tiktok_page_resolve_through_its_canonical_page(
        net: dict[str, Any]) -> None:
    """tiktok.com and m.tiktok.com pages are the www.tiktok.com page yt-dlp's TikTok
    extractor knows (its generic one would read them as any site's page)."""
    fake: FakeTikTok = net["tiktok"]
    config = FetchConfig(allow_private_networks=True, retries=0, throttle=0.0)
    urls = ["https://m.tiktok.com/@alice/video/7301234567890123456?lang=en",
            "https://tiktok.com/@bob/video/7301234567890123457/"]
    results = fetch_all(net["root"], config, [(u, {"kind": "video"}) for u in urls])
    assert all(r.ok for r in results), [r.error for r in results]
    assert [r.resolved for r in results] == [
        "page from https://www.tiktok.com/@alice/video/7301234567890123456",
        "page from https://www.tiktok.com/@bob/video/7301234567890123457"]
    assert all(r.mimetype == "video/mp4" for r in results)
    assert fake.refused == []


def test_ytdlp_is_never_asked_for_another_sites_page() -> None:
    """Whatever reaches the resolver, yt-dlp reads TikTok pages only: another URL is an
    error, and its server never sees a request."""
    from aiohttp import web

    from connectors.fetch.resolvers import ytdlp_resolve
    from tests.live_helpers import LocalServer

    seen: list[str] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text='<video src="/v.mp4"></video>', content_type="text/html")

    app = web.Application()
    app.router.add_get("/{p:.*}", page)
    with LocalServer(app) as server, pytest.raises(ResolveError):
        ytdlp_resolve(f"{server.url}/@alice/video/1", FetchConfig(read_timeout=5))
    assert seen == []


def test_pages_resolve_at_most_p_at_once(net: dict[str, Any]) -> None:
    fake: FakeTikTok = net["tiktok"]
    fake.page_delay = 0.4
    for n in range(6):
        fake.videos[f"73100000000000000{n:02d}"] = f"user{n}"
    config = FetchConfig(allow_private_networks=True, retries=0, throttle=0.0,
                         per_host={PAGE_HOST: (2, 0.0)})
    pages = [f"https://www.tiktok.com/@{u}/video/{v}" for v, u in fake.videos.items()]
    started = time.monotonic()
    results = fetch_all(net["root"], config, [(p, {}) for p in pages])
    assert all(r.ok for r in results), [r.error for r in results]
    assert fake.peak[PAGE_HOST] == 2
    # 9 pages, two at a time, 0.4 s each: the event loop was not blocked by yt-dlp.
    assert time.monotonic() - started < 9 * 0.4


def test_refused_or_expired_signed_urls_are_resolved_again(
        net: dict[str, Any], fixtures: Path) -> None:
    """Instagram: one URL past its ``oe`` (never requested), one answered 403, re-resolved
    from the post through instaloader; TikTok: a CDN URL answered 410, re-resolved from the
    video's page through yt-dlp."""
    fake_tt: FakeTikTok = net["tiktok"]
    ig: fake_instagram.FakeInstagram = net["instagram"]
    carousel = next(m for m in fake_instagram.fixture_media(fixtures)
                    if m.get("media_type") == 8 and len(m.get("carousel_media") or []) > 1)
    fresh = copy.deepcopy(carousel)
    for n, child in enumerate(fresh["carousel_media"]):
        for c in child["image_versions2"]["candidates"]:
            c["url"] = f"https://{IG_CDN}/v/fresh-{n}.jpg?oe={int(time.time()) + 3600:x}"
        for v in child.get("video_versions") or []:
            v["url"] = f"https://{IG_CDN}/v/fresh-{n}.mp4?oe={int(time.time()) + 3600:x}"
    ig.add_post(fresh)
    ig.add_file("/v/old-403.jpg", b"", status=403)
    for n in range(len(fresh["carousel_media"])):
        ig.add_file(f"/v/fresh-{n}.jpg", b"\xff\xd8\xff\xe0 JFIF child %d" % n + b"\0" * 64)
    pk = str(carousel["pk"])
    expired = f"https://{IG_CDN}/v/old-expired.jpg?oe={int(time.time()) - 60:x}"
    refused = f"https://{IG_CDN}/v/old-403.jpg?oe={int(time.time()) + 600:x}"
    gone_id = "7301234567890123457"
    gone = fake_tt.file_url(gone_id)
    fake_tt.gone.add(file_id(gone))
    config = FetchConfig(allow_private_networks=True, retries=0, throttle=0.0)
    results = fetch_all(net["root"], config, [
        (expired, {"platform": "instagram", "post_id": pk, "position": 0, "kind": "photo"}),
        (refused, {"platform": "instagram", "post_id": pk, "position": 1, "kind": "photo"}),
        (gone, {"platform": "tiktok", "post_id": gone_id, "position": 0, "kind": "video"}),
    ])
    by_url = {r.url: r for r in results}
    assert all(r.ok for r in results), [(r.error, r.resolved) for r in results]
    page = f"https://www.instagram.com/p/{instagram_shortcode(pk)}/"
    assert by_url[expired].resolved == f"expired from {page}"
    assert by_url[expired].final_url.startswith(f"https://{IG_CDN}/v/fresh-0.jpg")
    assert by_url[refused].resolved == f"http 403 from {page}"
    assert by_url[refused].final_url.startswith(f"https://{IG_CDN}/v/fresh-1.jpg")
    stored = (net["root"] / by_url[refused].path).read_bytes()
    assert stored.startswith(b"\xff\xd8\xff\xe0 JFIF child 1")
    assert by_url[gone].resolved == f"http 410 from https://www.tiktok.com/@_/video/{gone_id}"
    assert by_url[gone].path.endswith(".mp4")
    assert by_url[gone].media_cells()["resolved"].startswith("http 410 from ")
    # The expired URL was never asked for: its signature said it would be refused.
    assert not any("old-expired" in path for _, path in ig.requests)
    assert sum("old-403" in path for _, path in ig.requests) == 1


def test_research_api_videos_end_as_mp4_files_through_the_dataflow(
        net: dict[str, Any], fixtures: Path) -> None:
    """Research-API posts (whose media URL is the video's page) through Kafka and the real
    dataflow: each video's mp4 lands in its hashtag's folder and its media row points at
    it; a page yt-dlp cannot read is that row's error, and the others still arrive."""
    from connectors.collect.tiktok import FORMAT
    from connectors.kafka.broker import EmbeddedBroker
    from connectors.kafka.publisher import Publisher, ensure_topics
    from shoal.model import FETCH_COLUMNS, RawPost
    from tests.pipeline import read_csv_xz, run_flow
    from tests.test_collect_tiktok import template

    fake: FakeTikTok = net["tiktok"]
    fake.unresolvable.add("7301234567890123458")
    base = template(fixtures)
    data = net["root"].parent / "data"
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, 2)
        pub = Publisher(broker.bootstrap, "tiktok-research")
        for n, (vid, user) in enumerate(fake.videos.items()):
            video = {k: v for k, v in base.items() if k != "video_id"}
            video.update(id=int(vid), username=user, create_time=1704200000 + n,
                         hashtag_names=["london"], query="london", query_kind="hashtag",
                         found_at="2024-01-02T13:00:00Z")
            pub.post(RawPost("tiktok", vid, FORMAT, video, source=f"test:{n}"))
        pub.close()
        fetch = FetchConfig(allow_private_networks=True, retries=0, throttle=0.0,
                            folder_strategy="flat",
                            filename_template="{query}/{kind}/{post_id}.{ext}")
        run_flow(broker.bootstrap, data, media=True, fetch=fetch, reseal_interval=0.2)
    (media_file,) = (data / "tiktok").glob("*/*_media.csv.xz")
    rows = {r["post_id"]: r for r in read_csv_xz(media_file)}
    assert list(next(iter(rows.values())))[-len(FETCH_COLUMNS):] == list(FETCH_COLUMNS)
    assert set(rows) == set(fake.videos)
    for vid in ("7301234567890123456", "7301234567890123457"):
        row = rows[vid]
        assert row["error"] == "" and row["path"] == f"media/london/video/{vid}.mp4", row
        assert row["url"] == f"https://www.tiktok.com/@{fake.videos[vid]}/video/{vid}"
        assert row["final_url"].startswith(f"https://{CDN_HOST}/video/tos/")
        assert row["resolved"] == f"page from {row['url']}"
        assert row["mimetype"] == "video/mp4"
        assert (data / row["path"]).read_bytes() == mp4_bytes(vid)
    bad = rows["7301234567890123458"]
    assert bad["error"].startswith("resolve failed: ") and bad["path"] == ""
    assert bad["resolved"].startswith("page from ")


def test_hours_sealed_before_the_resolved_column_still_read(tmp_path: Path) -> None:
    """An older shoal's hours have no ``resolved``: re-sealing one writes it empty, and the
    ``media`` view reads old and new Parquet partitions together (NULL for the old)."""
    import duckdb

    from connectors.store.catalog import Catalog, connect_readonly
    from connectors.store.layout import HourPaths
    from connectors.store.seal import csv_bytes
    from shoal.model import MEDIA_FILE_COLUMNS, POST_COLUMNS, USER_COLUMNS

    assert MEDIA_FILE_COLUMNS[-1] == "resolved"
    old_columns = MEDIA_FILE_COLUMNS[:-1]
    data = tmp_path / "data"
    catalog = Catalog(data)
    catalog.ensure()
    old = HourPaths(data, "tiktok", 1704186000, "UTC")
    new = HourPaths(data, "tiktok", 1704189600, "UTC")
    row = {c: "" for c in old_columns} | {"post_id": "1", "platform": "tiktok",
                                          "position": "0", "url": "https://x/1.mp4"}
    # The old hour as an older shoal sealed it: CSV and Parquet without the column.
    assert csv_bytes(MEDIA_FILE_COLUMNS, [row]).splitlines()[1].endswith(b",")
    old.parquet("media").parent.mkdir(parents=True)
    cells = ", ".join(f"'{row[c]}' AS \"{c}\"" for c in old_columns)
    duckdb.execute(f"COPY (SELECT {cells}) TO '{old.parquet('media')}' (FORMAT parquet)")
    page = "https://www.tiktok.com/@a/video/2"
    new_row = {**row, "post_id": "2", "url": page, "resolved": f"page from {page}"}
    catalog.publish_hour(new, csv_bytes(POST_COLUMNS, []), csv_bytes(USER_COLUMNS, []),
                         csv_bytes(MEDIA_FILE_COLUMNS, [new_row]))
    catalog.close()
    con = connect_readonly(data)
    try:
        got = con.execute("SELECT post_id, resolved FROM media ORDER BY post_id").fetchall()
    finally:
        con.close()
    assert got == [("1", None), ("2", f"page from {page}")]


def test_shoal_fetch_reports_how_a_page_was_resolved(net: dict[str, Any], tmp_path: Path) -> None:
    """``shoal fetch`` on a column of TikTok video pages: the files are the videos, and the
    report says each was resolved from its page (and where the failing one stopped)."""
    from shoal.app import fetch_cmd
    from tests.test_fetch_cmd import parse, read_csv, write_csv

    fake: FakeTikTok = net["tiktok"]
    fake.unresolvable.add("7301234567890123458")
    pages = [f"https://www.tiktok.com/@{u}/video/{v}" for v, u in fake.videos.items()]
    write_csv(tmp_path / "in.csv", [{"id": str(n), "link": p} for n, p in enumerate(pages)])
    report = tmp_path / "report.csv"
    argv = ["link", "-i", str(tmp_path / "in.csv"), "-O", str(tmp_path / "out"), "-o",
            str(report), "--allow-private-networks", "--throttle", "0", "--retries", "0"]
    assert fetch_cmd.run(parse(argv)) == 0
    lines = {r["fetch_url"]: r for r in read_csv(report)}
    assert list(next(iter(lines.values())))[-1] == "fetch_resolved"
    for page in pages[:2]:
        line = lines[page]
        assert line["fetch_error"] == "" and line["fetch_path"].endswith(".mp4")
        assert line["fetch_resolved"] == f"page from {page}"
        assert line["fetch_resolved_url"].startswith(f"https://{CDN_HOST}/")
    failed = lines[pages[2]]
    assert failed["fetch_error"].startswith("resolve failed: ") and failed["fetch_path"] == ""
