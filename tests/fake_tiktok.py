"""www.tiktok.com video pages and its video CDN, as yt-dlp and the fetch engine see them.

One HTTPS server answers for both names (the test CA signs a certificate for each; the
resolver override sends both to it), telling them apart by the Host header:

- ``www.tiktok.com/@USER/video/ID``: the web page yt-dlp's TikTok extractor reads, with the
  rehydration JSON it parses (``<script id="__UNIVERSAL_DATA_FOR_REHYDRATION__">``,
  ``__DEFAULT_SCOPE__["webapp.video-detail"].itemInfo.itemStruct``) and the ``tt_chain_token``
  cookie on ``.tiktok.com`` that the real site sets and its CDN then wants back;
- ``v16-webapp-prime.tiktok.com/video/tos/...``: the MP4, only for a request carrying that
  cookie and the page as Referer (403 otherwise), or 410 for a file listed as gone.

Every request is recorded with its start and end, so tests can check the per-host gap and
the number of requests in flight as the server saw them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PAGE_HOST = "www.tiktok.com"
CDN_HOST = "v16-webapp-prime.tiktok.com"
HOSTS = (PAGE_HOST, CDN_HOST)


def file_id(url: str) -> str:
    """The file part of a CDN URL made by :meth:`FakeTikTok.file_url`."""
    return url.split("?")[0].rstrip("/").rsplit("/", 1)[1]


def mp4_bytes(video_id: str) -> bytes:
    """A small MP4 (an ``ftyp`` box first, as the type sniffer wants), unique per video."""
    ftyp = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    payload = f"mdat of video {video_id} ".encode() * 40
    mdat = (8 + len(payload)).to_bytes(4, "big") + b"mdat" + payload
    return ftyp + mdat


@dataclass
class Seen:
    host: str
    path: str
    start: float
    end: float = 0.0
    status: int = 0


@dataclass
class FakeTikTok:
    """Videos by id -> author; ``unresolvable`` pages have no rehydration data (a login
    wall), ``gone`` files answer 410; ``page_delay`` keeps a page request in flight."""

    videos: dict[str, str] = field(default_factory=dict)
    unresolvable: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)
    page_delay: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # file id -> the cookie it wants
    pages: dict[str, str] = field(default_factory=dict)  # file id -> the page that gave it
    active: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.watch])
        app.router.add_get("/{path:.*}", self.route)
        return app

    @web.middleware
    async def watch(self, request: web.Request, handler: Any) -> web.StreamResponse:
        host = request.host.split(":")[0]
        seen = Seen(host, request.path_qs, time.monotonic())
        self.seen.append(seen)
        self.active[host] = self.active.get(host, 0) + 1
        self.peak[host] = max(self.peak.get(host, 0), self.active[host])
        try:
            response: web.StreamResponse = await handler(request)
            seen.status = response.status
            return response
        finally:
            self.active[host] -= 1
            seen.end = time.monotonic()

    def on(self, host: str) -> list[Seen]:
        return [s for s in self.seen if s.host == host]

    async def route(self, request: web.Request) -> web.StreamResponse:
        host = request.host.split(":")[0]
        if host == PAGE_HOST:
            return await self.page(request)
        if host == CDN_HOST:
            return self.file(request)
        return web.Response(status=421, text="misdirected")

    # -- www.tiktok.com
    def file_url(self, video_id: str, kind: str = "play", expires: float | None = None) -> str:
        """A signed CDN URL shaped like the real ones; a fresh file id every time."""
        file_id = f"o{video_id[-6:]}{secrets.token_hex(6)}"
        exp = int(expires if expires is not None else time.time() + 3600)
        return (f"https://{CDN_HOST}/video/tos/useast2a/tos-useast2a-ve-0068c001/{file_id}/"
                f"?a=1988&bti=NEBzNTY6QGo6OjZALnAjNDQuYCMxNDNg&ch=0&cr=3&dr=0&lr=all&cd=0%7C0"
                f"&cv=1&br=1200&bt=600&cs=0&ds=6&ft=4KJMyMzm8Zmo0&mime_type=video_mp4&qs=0"
                f"&rc=ZmU7OjVpZjVmOmQ0&btag=e00088000&expire={exp}&l=20240101&ply_type=2"
                f"&policy=2&signature=5f1e{secrets.token_hex(12)}&tk=tt_chain_token&vid={kind}")

    def item_struct(self, video_id: str, user: str, token: str, page: str) -> dict[str, Any]:
        play = self.file_url(video_id)
        download = self.file_url(video_id, "download")
        for url in (play, download):
            fid = file_id(url)
            self.tokens[fid] = token
            self.pages[fid] = page
        return {
            "id": video_id, "desc": f"video {video_id} #london", "createTime": "1704200000",
            "scheduleTime": 0, "duetEnabled": True, "stitchEnabled": True,
            "video": {"id": video_id, "height": 1024, "width": 576, "duration": 12,
                      "ratio": "540p", "cover": f"https://p16-sign.tiktokcdn.com/{video_id}.jpeg",
                      "originCover": f"https://p16-sign.tiktokcdn.com/{video_id}-o.jpeg",
                      "playAddr": play, "downloadAddr": download, "format": "mp4",
                      "videoQuality": "normal", "codecType": "h264", "definition": "540p",
                      "bitrate": 1200000, "encodedType": "normal", "VQScore": "66.2"},
            "author": {"id": "6800000000000000001", "uniqueId": user, "nickname": user.title(),
                       "secUid": "MS4wLjABAAAA" + user, "verified": False, "privateAccount":
                       False},
            "music": {"id": "7000000000000000001", "title": "original sound",
                      "authorName": user.title(), "original": True, "duration": 12},
            "stats": {"diggCount": 12, "shareCount": 1, "commentCount": 3, "playCount": 240,
                      "collectCount": 2},
            "isAd": False, "privateItem": False, "secret": False, "forFriend": False,
        }

    async def page(self, request: web.Request) -> web.Response:
        parts = request.path.strip("/").split("/")
        if len(parts) != 3 or parts[1] != "video" or not parts[0].startswith("@"):
            return web.Response(status=404, text="not found")
        video_id = parts[2]
        await asyncio.sleep(self.page_delay)
        if video_id in self.unresolvable or video_id not in self.videos:
            # What a blocked or removed video looks like to a scraper: a page without data.
            return web.Response(text="<html><head><title>TikTok - Make Your Day</title></head>"
                                "<body><div id='app'>Log in to TikTok</div></body></html>",
                                content_type="text/html")
        page = f"https://{PAGE_HOST}{request.path}"
        token = secrets.token_urlsafe(16)
        scope = {"__DEFAULT_SCOPE__": {
            "webapp.app-context": {"language": "en", "region": "GB"},
            "webapp.video-detail": {
                "statusCode": 0, "statusMsg": "",
                "itemInfo": {"itemStruct": self.item_struct(video_id, self.videos[video_id],
                                                            token, page)},
                "shareMeta": {"title": "TikTok", "desc": ""}}}}
        html = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>TikTok'
                '</title></head><body><div id="app"></div><script id="__UNIVERSAL_DATA_FOR_'
                'REHYDRATION__" type="application/json">' + json.dumps(scope) + "</script>"
                "</body></html>")
        resp = web.Response(text=html, content_type="text/html")
        resp.set_cookie("tt_chain_token", token, domain=".tiktok.com", path="/", secure=True,
                        httponly=True, max_age=86400 * 180)
        return resp

    # -- the CDN
    def file(self, request: web.Request) -> web.Response:
        parts = request.path.strip("/").split("/")
        fid = parts[4] if len(parts) >= 5 else ""
        if fid in self.gone:
            return web.Response(status=410, text="Gone")
        want = self.tokens.get(fid)
        if want is None:
            return web.Response(status=404, text="no such file")
        cookie = request.cookies.get("tt_chain_token")
        referer = request.headers.get("Referer", "")
        if cookie != want or referer != self.pages[fid]:
            self.refused.append(fid)
            return web.Response(status=403, text="Access Denied")
        video_id = self.pages[fid].rstrip("/").rsplit("/", 1)[1]
        return web.Response(body=mp4_bytes(video_id), content_type="video/mp4")
