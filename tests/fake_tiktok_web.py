"""www.tiktok.com as yt-dlp's user listing (``TikTokUserIE``) talks to it, on loopback over TLS.

Two requests make a listing, answered as TikTok answers them:

1. the profile page ``/@NAME``, whose ``<script id="__UNIVERSAL_DATA_FOR_REHYDRATION__">``
   holds ``__DEFAULT_SCOPE__["webapp.user-detail"]``: ``userInfo.user`` (with the
   ``secUid`` the listing needs) and ``userInfo.stats.videoCount``, ``statusCode`` 0; a private
   account answers ``statusCode`` 10222 with no videos counted, a name that does not exist
   10221 and no ``userInfo`` (yt-dlp then tries ``/embed/@NAME``, which 404s);
2. ``/api/creator/item_list/?secUid=...&cursor=MS&count=15&type=1``: the account's videos
   newest first, those created before ``cursor`` (milliseconds), ``count`` at most, as
   ``itemList`` of web ``itemStruct`` objects, with ``hasMorePrevious`` while older ones remain.

The videos are the Zeeschuimer fixture's real itemStructs
(../shared/fixtures/tiktok/jorisheijkant__zeeschuimer-decoder), given to our accounts with
ids and times of their own. ``requests`` lists every request (path, query) for the tests.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

HOSTS = ("www.tiktok.com",)
PRIVATE, MISSING = 10222, 10221


def fixture_items(fixtures: Path) -> list[dict[str, Any]]:
    path = (fixtures / "tiktok" / "jorisheijkant__zeeschuimer-decoder" / "test-files"
            / "tiktok-test.lines-001-064.ndjson")
    return [json.loads(line)["data"] for line in path.read_text().splitlines() if line.strip()]


@dataclass
class WebUser:
    name: str
    uid: str
    private: bool = False
    videos: list[dict[str, Any]] = field(default_factory=list)  # itemStructs, newest first

    @property
    def sec_uid(self) -> str:
        # The shape of a real one: "MS4wLjABAAAA" and 64 more characters.
        return "MS4wLjABAAAA" + (self.name * 64)[:52] + self.uid.rjust(12, "0")[-12:]


@dataclass
class FakeTikTokWeb:
    users: dict[str, WebUser]
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/creator/item_list/", self.item_list)
        app.router.add_get("/embed/@{name}", self.embed)
        app.router.add_get("/@{name}", self.profile_page)
        app.middlewares.append(self.watch)
        return app

    @web.middleware
    async def watch(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.query)))
        response: web.StreamResponse = await handler(request)
        return response

    def detail(self, name: str) -> dict[str, Any]:
        """``webapp.user-detail`` as the profile page embeds it."""
        user = self.users.get(name)
        if user is None:
            return {"statusCode": MISSING, "statusMsg": "user not exist"}
        stats = {"followerCount": 1200, "followingCount": 80, "heart": 5400,
                 "videoCount": 0 if user.private else len(user.videos), "diggCount": 0}
        info = {"user": {"id": user.uid, "uniqueId": user.name, "nickname": user.name.title(),
                         "secUid": user.sec_uid, "privateAccount": user.private,
                         "verified": False},
                "stats": stats, "statsV2": {k: str(v) for k, v in stats.items()}}
        if user.private:
            return {"userInfo": info, "statusCode": PRIVATE, "statusMsg": "author_secret"}
        return {"userInfo": info, "statusCode": 0, "statusMsg": ""}

    async def profile_page(self, request: web.Request) -> web.Response:
        detail = self.detail(request.match_info["name"])
        scope = {"__DEFAULT_SCOPE__": {"webapp.app-context": {"language": "en"},
                                       "webapp.user-detail": detail}}
        html = ('<!DOCTYPE html><html><head><title>TikTok</title></head><body>'
                '<script id="__UNIVERSAL_DATA_FOR_REHYDRATION__" type="application/json">'
                f"{json.dumps(scope)}</script></body></html>")
        return web.Response(text=html, content_type="text/html")

    async def embed(self, request: web.Request) -> web.Response:
        return web.Response(status=404, text="<html>Not found</html>", content_type="text/html")

    async def item_list(self, request: web.Request) -> web.Response:
        q = request.query
        user = next((u for u in self.users.values() if u.sec_uid == q.get("secUid")), None)
        if user is None or user.private or q.get("type") != "1":
            return web.json_response({"statusCode": 10201, "statusMsg": "", "itemList": []})
        cursor, count = int(q["cursor"]), int(q.get("count") or 15)
        older = [v for v in user.videos if v["createTime"] * 1000 < cursor]
        page = older[:count]
        return web.json_response({"itemList": page, "hasMorePrevious": len(older) > len(page),
                                  "hasMore": False, "statusCode": 0, "statusMsg": "",
                                  "extra": {"now": 1733000000000, "logid": "2024"}})


def accounts(fixtures: Path, counts: dict[str, int], private: tuple[str, ...] = (),
             newest: int = 1730000000) -> FakeTikTokWeb:
    """Accounts with ``counts[name]`` videos each (fixture items, fresh ids, a day apart,
    newest first), and ``private`` ones with videos nobody may list."""
    items = fixture_items(fixtures)
    users: dict[str, WebUser] = {}
    n = 0
    for u, (name, count) in enumerate({**counts, **dict.fromkeys(private, 3)}.items()):
        user = WebUser(name, str(6800000000000000000 + u), private=name in private)
        for i in range(count):
            n += 1
            item = copy.deepcopy(items[n % len(items)])
            vid = str(7400000000000000000 + n)
            item.update(id=vid, createTime=newest - 86400 * i - u * 600,
                        desc=f"{name} video {i} #{name} #fyp")
            item["video"] = {**item.get("video", {}), "id": vid}
            item["author"] = {**item.get("author", {}), "id": user.uid, "uniqueId": name,
                              "nickname": name.title(), "secUid": user.sec_uid}
            user.videos.append(item)
        users[name] = user
    return FakeTikTokWeb(users)
