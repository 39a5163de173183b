"""www.instagram.com as instaloader (4.16, logged in) talks to it, on loopback over TLS.

What each endpoint answers is shaped like Instagram's: the start page with the web app's
tokens, the profile page with its embedded ``xig_user_by_username`` query result, the
GraphQL profile query (``data.user``; fields from the instagram-api fixture's profile) and the
timeline pages (``xdt_api__v1__feed__user_timeline_graphql_connection``) holding private-API
Media objects, which are the Zeeschuimer fixture's real ones, given to our profiles. Faults are
scripted per profile: private, missing, a timed-out page twice, a 429 that opens a window in
which any request is a violation.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

HOSTS = ("www.instagram.com", "i.instagram.com")
USER_QUERY_DOC = "27937681195819736"
TIMELINE_DOC = "29104886249145907"
LOGIN_HASH = "d6f4427fbe92d846298cf93df0b937d3"
POST_DOC = "27128499623469141"  # a post by shortcode, as the logged-out web app asks
START_PAGE = ('<html><script>["DTSGInitialData",[],{"token":"dtsg:1"}]["LSD",[],{"token":"lsd1"}]'
              '{"IG_USER_EIMU":"17841400000"}</script></html>')


def fixture_media(fixtures: Path) -> list[dict[str, Any]]:
    path = fixtures / "instagram/craigfahner__zeeschuimer-workshop/posts.ndjson"
    return [json.loads(line)["data"] for line in path.read_text().splitlines() if line.strip()]


def fixture_profile(fixtures: Path) -> dict[str, Any]:
    path = (fixtures / "instagram-api/arc298__instagram-scraper/instagram_scraper/tests/fixtures"
            / "response_user_metadata.json")
    user: dict[str, Any] = json.loads(path.read_text())["entry_data"]["ProfilePage"][0]["user"]
    return user


@dataclass
class Profile:
    name: str
    pk: str
    private: bool = False
    posts: list[dict[str, Any]] = field(default_factory=list)
    timeouts: int = 0  # the first N requests for its second page hang past the client timeout
    rate_limit: bool = False  # its first timeline request is answered 429


@dataclass
class FakeInstagram:
    profiles: dict[str, Profile]
    template: dict[str, Any]
    window: float = 2.0  # seconds after a 429 in which no request may come
    page_size: int = 2
    hang: float = 2.0
    delay: float = 0.0  # before every timeline page (room for a kill mid-batch)
    requests: list[tuple[float, str]] = field(default_factory=list)
    violations: list[tuple[float, str]] = field(default_factory=list)
    window_start: float = 0.0
    window_end: float = 0.0
    login_ok: bool = True
    # Posts by shortcode (Post.from_shortcode/from_mediaid) and CDN files by path, for the
    # fetch step's re-resolution of expired media URLs (tests/test_fetch_resolve.py).
    posts: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, tuple[int, bytes]] = field(default_factory=dict)

    def add_post(self, media: dict[str, Any]) -> None:
        import instaloader

        self.posts[instaloader.Post.mediaid_to_shortcode(int(media["pk"]))] = media

    def add_file(self, path: str, body: bytes, status: int = 200) -> None:
        self.files[path] = (status, body)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.start_page)
        app.router.add_get("/graphql/query", self.graphql_get)
        app.router.add_post("/graphql/query", self.graphql_post)
        app.router.add_post("/api/graphql", self.api_graphql)
        app.router.add_get("/v/{name}", self.cdn_file)
        app.router.add_get("/{user}/", self.profile_page)
        app.middlewares.append(self.watch)
        return app

    @web.middleware
    async def watch(self, request: web.Request, handler: Any) -> web.StreamResponse:
        now = time.monotonic()
        self.requests.append((now, request.path))
        if self.window_start <= now < self.window_end:
            self.violations.append((now, request.path))
            return web.json_response({"message": "Please wait a few minutes before you try again.",
                                      "status": "fail"}, status=429)
        response: web.StreamResponse = await handler(request)
        return response

    async def start_page(self, request: web.Request) -> web.Response:
        resp = web.Response(text=START_PAGE, content_type="text/html")
        resp.set_cookie("csrftoken", "csrf-from-start-page")
        return resp

    async def graphql_get(self, request: web.Request) -> web.Response:
        if request.query.get("query_hash") == LOGIN_HASH:
            user = {"username": "researcher"} if self.login_ok else None
            return web.json_response({"data": {"user": user}, "status": "ok"})
        return web.json_response({"message": "unknown query", "status": "fail"}, status=400)

    def _user(self, p: Profile) -> dict[str, Any]:
        user = copy.deepcopy(self.template)
        user.pop("media", None)
        user.update(pk=p.pk, id=p.pk, username=p.name, full_name=p.name.title(),
                    is_private=p.private, media_count=len(p.posts),
                    friendship_status={"following": False, "followed_by": False})
        return user

    async def profile_page(self, request: web.Request) -> web.Response:
        p = self.profiles.get(request.match_info["user"])
        if p is None:
            return web.Response(status=404, text="<html>Sorry, this page isn't available.</html>",
                                content_type="text/html")
        user = {"pk": p.pk, "id": f"page-{p.pk}", "username": p.name, "is_private": p.private,
                "full_name": p.name.title()}
        blob = {"require": [["ScheduledServerJS", "handle", None, [{"__bbox": {"require": [[
            "RelayPrefetchedStreamCache", "next", [], ["adp_PolarisProfilePageContentQuery",
                                                       {"__bbox": {"complete": True, "result": {
                                                           "data": {"xig_user_by_username": user},
                                                           "extensions": {}}}}]]]}}]]]}
        html = (f'<html><body><script type="application/json" data-sjs>{json.dumps(blob)}'
                "</script></body></html>")
        return web.Response(text=html, content_type="text/html")

    async def graphql_post(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("doc_id") != USER_QUERY_DOC:
            return web.json_response({"message": "unknown doc_id", "status": "fail"}, status=400)
        variables = json.loads(str(form["variables"]))
        p = next((p for p in self.profiles.values() if p.pk == variables["id"]), None)
        return web.json_response({"data": {"user": self._user(p) if p else None},
                                  "status": "ok"})

    async def cdn_file(self, request: web.Request) -> web.Response:
        status, body = self.files.get(request.path, (404, b""))
        if status != 200:
            return web.Response(status=status, text="URL signature expired")
        return web.Response(body=body, content_type="image/jpeg")

    async def post_by_shortcode(self, variables: dict[str, Any]) -> web.Response:
        media = self.posts.get(variables.get("shortcode", ""))
        items = [media] if media is not None else []
        return web.json_response({"data": {"xdt_api__v1__media__shortcode__web_info": {
            "items": items}}, "extensions": {"is_final": True}})

    async def api_graphql(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("doc_id") == POST_DOC and form.get("lsd") == "lsd1":
            return await self.post_by_shortcode(json.loads(str(form["variables"])))
        if form.get("doc_id") != TIMELINE_DOC or form.get("lsd") != "lsd1":
            return web.json_response({"errors": [{"message": "execution error"}]}, status=400)
        variables = json.loads(str(form["variables"]))
        p = self.profiles[variables["username"]]
        if p.rate_limit:
            p.rate_limit = False
            self.window_start = time.monotonic()
            self.window_end = self.window_start + self.window
            return web.json_response({"message": "Please wait a few minutes before you try "
                                      "again.", "status": "fail"}, status=429)
        start = int(variables.get("after") or 0)
        if start and p.timeouts:
            p.timeouts -= 1
            await asyncio.sleep(self.hang)
        await asyncio.sleep(self.delay)
        page = p.posts[start:start + self.page_size]
        end = start + len(page)
        user = {"pk": p.pk, "id": p.pk, "username": p.name, "full_name": p.name.title(),
                "is_private": False, "profile_pic_url": "https://scontent.cdninstagram.com/p.jpg"}
        edges = [{"node": {**m, "user": {**m.get("user", {}), **user}}, "cursor": str(i)}
                 for i, m in enumerate(page, start)]
        return web.json_response({"data": {"xdt_api__v1__feed__user_timeline_graphql_connection": {
            "edges": edges,
            "page_info": {"has_next_page": end < len(p.posts), "end_cursor": str(end),
                          "has_previous_page": start > 0, "start_cursor": str(start)}}},
            "extensions": {"is_final": True}})


def batch(fixtures: Path, per_profile: int = 5) -> FakeInstagram:
    """Six profiles: four public (one rate-limited, one timing out twice), one private, one
    missing from the server ("ghost")."""
    media = fixture_media(fixtures)
    profiles: dict[str, Profile] = {}
    for n, name in enumerate(["alice", "bob", "carol", "dave", "erin"]):
        p = Profile(name, str(9100 + n), private=name == "bob", timeouts=2 if name == "dave"
                    else 0, rate_limit=name == "carol")
        if not p.private:
            taken = media[:per_profile]
            media = media[per_profile:]
            p.posts = taken
        profiles[name] = p
    return FakeInstagram(profiles, fixture_profile(fixtures))
