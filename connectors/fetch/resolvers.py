"""Asking a post's page for a downloadable file URL: yt-dlp for TikTok, instaloader for
Instagram (the libraries this field uses, unchanged, with their own request logic).

Both libraries block, so each call runs in a small thread pool of its own: the event loop
that drives every other download keeps turning while a page is read. The engine holds the
page host's gate ticket around the call (``connectors.fetch.engine``), so a resolution is
a request against www.tiktok.com or www.instagram.com like any other, within that host's
P and T. What the plan is (which page, which file of it) is decided in
``shoal.fetch.resolve``; here is only the asking.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from connectors.collect import resolve as name_override
from shoal.fetch.policy import FetchConfig
from shoal.fetch.resolve import (
    Plan,
    Resolved,
    ResolveError,
    cookie_header,
    instagram_file,
    ytdlp_file,
)

log = logging.getLogger("shoal.fetch")
THREADS = 4  # resolutions at once over all hosts; each host's gate limits its own share


class _QuietLog:
    """yt-dlp's logger: its errors become our ResolveError, so nothing is printed."""

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)


def ytdlp_options(config: FetchConfig) -> dict[str, Any]:
    """One TikTok page read, no download, no retry (a retry would be a second request inside one
    gate ticket), no format testing (that would request the CDN outside its gate), and the
    best single file holding video and sound (no merge: we store one file). yt-dlp's own
    browser User-Agent is kept: it is what the page and its CDN expect to see together.

    yt-dlp trusts certifi's roots unless told ``no-certifi``; with ``SSL_CERT_FILE`` set (a
    proxy's or a test CA) it is told, so that the system store honouring it is used."""
    opts: dict[str, Any] = {
        "quiet": True, "no_warnings": True, "skip_download": True, "noprogress": True,
        "noplaylist": True, "logger": _QuietLog(), "socket_timeout": config.read_timeout,
        "extractor_retries": 0, "retries": 0, "check_formats": False, "format": "b/bv*",
        # TikTok's extractor only: a page it does not know is an error, never a generic
        # read of some other site's page and of whatever that page embeds.
        "allowed_extractors": ["tiktok"],
    }
    if os.environ.get("SSL_CERT_FILE"):
        opts["compat_opts"] = {"no-certifi"}
    return opts


def ytdlp_resolve(page: str, config: FetchConfig) -> Resolved:
    """The playable file of a TikTok video page, with the headers yt-dlp says the format
    needs and the cookies the page set for the file's host (TikTok's CDN checks them)."""
    import yt_dlp
    from yt_dlp.utils import DownloadError

    try:
        with yt_dlp.YoutubeDL(ytdlp_options(config)) as ydl:
            info = ydl.extract_info(page, download=False)
            if not isinstance(info, dict):
                raise ResolveError("yt-dlp returned nothing")
            url, headers = ytdlp_file(info)
            cookies = [(c.name, c.value or "") for c in ydl.cookiejar.get_cookies_for_url(url)]
    except DownloadError as exc:
        raise ResolveError(_one_line(str(exc).removeprefix("ERROR: "))) from None
    if cookies:
        headers["Cookie"] = cookie_header(cookies)
    return Resolved(url, headers)


class InstagramResolver:
    """An anonymous instaloader context, shared (its web-app tokens are read once) and used
    by one thread at a time (instaloader's context is not thread-safe)."""

    def __init__(self, config: FetchConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._loader: Any = None

    def resolve(self, plan: Plan) -> Resolved:
        import instaloader
        from instaloader.exceptions import InstaloaderException

        with self._lock:
            if self._loader is None:
                self._loader = instaloader.Instaloader(
                    sleep=False, quiet=True, max_connection_attempts=1,
                    request_timeout=self.config.read_timeout, download_pictures=False,
                    download_videos=False, save_metadata=False, compress_json=False,
                )
            try:
                post = instaloader.Post.from_mediaid(self._loader.context, int(plan.post_id))
                if post.typename == "GraphSidecar":
                    nodes = [(n.is_video, n.display_url or "", n.video_url or "")
                             for n in post.get_sidecar_nodes()]
                else:
                    nodes = [(bool(post.is_video), post.url or "", post.video_url or "")]
            except (InstaloaderException, KeyError, ValueError) as exc:
                raise ResolveError(_one_line(f"{type(exc).__name__}: {exc}")) from None
        return Resolved(instagram_file(nodes, plan.position, plan.kind))


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


class Resolvers:
    """The engine's face: ``await resolve(plan)`` gives a Resolved or raises ResolveError,
    never anything else (a library's surprise is the row's fate, not a crash)."""

    def __init__(self, config: FetchConfig) -> None:
        self.config = config
        self._pool: ThreadPoolExecutor | None = None
        self._instagram = InstagramResolver(config)
        # The libraries name hosts themselves; the operator's SHOAL_RESOLVE (a proxy, a
        # mirror, a test server) is how they are pointed elsewhere, as for the collectors.
        name_override.install()

    async def resolve(self, plan: Plan) -> Resolved:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="shoal-resolve")
        loop = asyncio.get_running_loop()
        try:
            if plan.resolver == "yt-dlp":
                return await loop.run_in_executor(self._pool, ytdlp_resolve, plan.page,
                                                  self.config)
            if plan.resolver == "instaloader":
                return await loop.run_in_executor(self._pool, self._instagram.resolve, plan)
        except ResolveError:
            raise
        except Exception as exc:  # a library's bug or surprise: this row's fate only
            raise ResolveError(_one_line(f"{type(exc).__name__}: {exc}")) from None
        raise ResolveError(f"no resolver {plan.resolver!r}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
