"""When a media URL cannot be downloaded as it is, and where to ask for one that can.

Two kinds of media URL need a library between us and the file:

- a TikTok video *page* (``https://www.tiktok.com/@user/video/ID``): the Research API gives
  no file URL, so the page is the media URL, and yt-dlp turns it into the playable file and
  the headers and cookies the CDN wants with it;
- a *signed* CDN URL (Instagram's ``oe=``, TikTok's ``x-expires=``) whose signature has
  passed, or that the CDN refuses with 403/410: the file is still there, under a fresh
  signature that only the post can give (instaloader for Instagram, yt-dlp for TikTok).

Everything here is decided from the URL, the media row and a clock, without I/O: the engine
(``connectors.fetch.engine``) asks :func:`plan_before` before the request and
:func:`plan_after` after a refusal, and ``connectors.fetch.resolvers`` does the asking.
"""

from __future__ import annotations

import re
from base64 import urlsafe_b64encode
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# Status codes a signed CDN URL answers once its signature is no longer accepted: Instagram
# says 403 ("URL signature expired"), TikTok's CDN 403 or 410 (Gone).
REFRESH_STATUSES = frozenset({403, 410})

_TIKTOK_PAGE = re.compile(
    r"https?://(?:www\.|m\.)?tiktok\.com/@(?P<user>[\w.-]*)/video/(?P<id>\d+)/?(?:[?#].*)?",
    re.IGNORECASE,
)
# Host suffixes whose URLs carry an expiry in their query, and the parameter that holds it.
_INSTAGRAM_CDN = ("cdninstagram.com", "fbcdn.net")
_TIKTOK_CDN = ("tiktokcdn.com", "tiktokcdn-us.com", "tiktokcdn-eu.com", "tiktok.com",
               "tiktokv.com", "tiktokv.us", "tiktokv.eu", "ibytedtos.com", "byteoversea.com",
               "muscdn.com")
# Which library re-resolves the media of a platform's posts.
RESOLVERS = {"tiktok": "yt-dlp", "instagram": "instaloader"}


@dataclass(frozen=True, slots=True)
class Plan:
    """Resolve ``page`` with ``resolver`` because of ``trigger`` (``page``, ``expired``,
    ``http 403``...); ``position``/``kind`` pick the file among the post's media."""

    trigger: str
    resolver: str  # "yt-dlp" | "instaloader"
    page: str  # the post's page: what is asked, and what the media row names
    post_id: str = ""
    position: int = 0
    kind: str = ""

    def note(self) -> str:
        """The media row's ``resolved`` cell: what triggered it, and from where."""
        return f"{self.trigger} from {self.page}"


@dataclass(frozen=True, slots=True)
class Resolved:
    """A downloadable file: its URL and the request headers it must be fetched with (the
    Referer, User-Agent and cookies the page set, which TikTok's CDN checks)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


class ResolveError(Exception):
    """Resolution failed; the message is the media row's error after ``resolve failed:``."""


def tiktok_page(url: str) -> tuple[str, str] | None:
    """(user, video id) of a TikTok video page URL, or None for any other URL."""
    m = _TIKTOK_PAGE.fullmatch(url.strip())
    return (m.group("user"), m.group("id")) if m else None


def tiktok_page_url(video_id: str, user: str = "") -> str:
    """A video's page; yt-dlp itself writes ``@_`` when it does not know the author."""
    return f"https://www.tiktok.com/@{user or '_'}/video/{video_id}"


def instagram_shortcode(media_id: str) -> str:
    """The shortcode of a numeric Instagram media id (``/p/SHORTCODE/``): the id's 64 bits
    in Instagram's URL-safe base64, leading ``A`` (zero) digits dropped; "" for a bad id."""
    head = media_id.split("_", 1)[0]
    if not head.isdigit() or int(head).bit_length() > 64:
        return ""
    code = urlsafe_b64encode(b"\0" + int(head).to_bytes(8, "big")).decode()
    return code.lstrip("A") or "A"


def _host_in(host: str, suffixes: Sequence[str]) -> bool:
    return any(host == s or host.endswith("." + s) for s in suffixes)


def signature_expiry(url: str) -> float | None:
    """Unix time at which a signed CDN URL stops being accepted, or None when the URL
    carries no expiry we know of: Instagram/Facebook ``oe`` (hexadecimal), TikTok
    ``x-expires`` or ``expire`` (decimal seconds). Only their CDNs' hosts are read, since
    another site's ``oe`` or ``expire`` may mean anything."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
    except ValueError:
        return None
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    try:
        if _host_in(host, _INSTAGRAM_CDN) and query.get("oe"):
            return float(int(query["oe"], 16))
        if _host_in(host, _TIKTOK_CDN):
            value = query.get("x-expires") or query.get("expire")
            if value:
                return float(int(value))
    except ValueError:
        return None
    return None


def signature_expired(url: str, now: float) -> bool:
    """Whether ``url``'s signature has passed at unix time ``now`` (False when unsigned)."""
    expiry = signature_expiry(url)
    return expiry is not None and expiry <= now


def _position(meta: Mapping[str, Any]) -> int:
    try:
        return int(meta.get("position") or 0)
    except (TypeError, ValueError):
        return 0


def refresh_plan(trigger: str, meta: Mapping[str, Any]) -> Plan | None:
    """How to get a fresh URL for a media row's expired or refused file, from its post; None
    when its platform has no resolver or the row names no post."""
    platform = str(meta.get("platform") or "")
    post_id = str(meta.get("post_id") or "")
    resolver = RESOLVERS.get(platform)
    if not resolver or not post_id:
        return None
    if platform == "tiktok":
        if not post_id.isdigit():
            return None
        page = tiktok_page_url(post_id, str(meta.get("author") or ""))
    else:
        code = instagram_shortcode(post_id)
        if not code:
            return None
        page = f"https://www.instagram.com/p/{code}/"
    return Plan(trigger, resolver, page, post_id, _position(meta), str(meta.get("kind") or ""))


def plan_before(url: str, meta: Mapping[str, Any], now: float) -> Plan | None:
    """What to resolve before any request for ``url``: a TikTok page always (its HTML is
    not the video), a signed URL whose signature has passed (asking would only waste a
    request of the CDN's budget on a 403)."""
    page = tiktok_page(url)
    if page is not None:
        # yt-dlp's TikTok extractor knows www.tiktok.com only; tiktok.com and m.tiktok.com
        # would go to its generic extractor, which follows whatever the page embeds. The
        # canonical page of the same video is what it is asked for.
        return Plan("page", "yt-dlp", tiktok_page_url(page[1], page[0]), page[1],
                    _position(meta), str(meta.get("kind") or ""))
    if signature_expired(url, now):
        return refresh_plan("expired", meta)
    return None


def plan_after(status: int, meta: Mapping[str, Any]) -> Plan | None:
    """What to resolve after the CDN refused the URL with ``status`` (403/410), or None."""
    if status not in REFRESH_STATUSES:
        return None
    return refresh_plan(f"http {status}", meta)


# --- what the libraries answered -------------------------------------------------------------


def cookie_header(cookies: Sequence[tuple[str, str]]) -> str:
    """A ``Cookie`` header from (name, value) pairs, in order, later names winning."""
    merged = dict(cookies)
    return "; ".join(f"{k}={v}" for k, v in merged.items())


def ytdlp_file(info: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The file URL and headers of yt-dlp's answer for one video (``extract_info`` with
    ``download=False``): the selected format's ``url`` and ``http_headers``, or, when
    several were selected (a merge), the first that holds video. Raises ResolveError."""
    chosen: Mapping[str, Any] = info
    if not info.get("url"):
        requested = info.get("requested_formats") or info.get("formats") or []
        videos = [f for f in requested if isinstance(f, Mapping) and f.get("url")
                  and f.get("vcodec") != "none"]
        if not videos:
            raise ResolveError("no playable format in the page")
        chosen = videos[0] if info.get("requested_formats") else videos[-1]
    url = str(chosen.get("url") or "")
    if not url.startswith(("http://", "https://")):
        raise ResolveError(f"format URL is not http(s): {url[:80]!r}")
    headers = {str(k): str(v) for k, v in (chosen.get("http_headers") or {}).items()
               if str(k).lower() != "cookie"}
    return url, headers


def instagram_file(nodes: Sequence[tuple[bool, str, str]], position: int, kind: str) -> str:
    """The URL of a post's media at ``position`` from instaloader's view of the post, as
    (is_video, display_url, video_url) per item (one for a single photo or video, one per
    sidecar child): the video file of a video row, the picture otherwise. Raises
    ResolveError when the post has no such item any more."""
    if not 0 <= position < len(nodes):
        raise ResolveError(f"post has {len(nodes)} media, none at position {position}")
    is_video, display_url, video_url = nodes[position]
    url = video_url if (kind == "video" or (is_video and kind != "photo")) and video_url \
        else display_url
    if not url:
        raise ResolveError(f"post has no file for its media at position {position}")
    return url
