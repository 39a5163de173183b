"""A loopback media server for the demo, so ``shoal up --source demo`` fetches real files.

It answers any path with deterministic bytes of the type the extension names (a JPEG, an MP4
or an HLS playlist, recognisable by their magic numbers), so identical URLs give identical
files and the content-addressed store shows its deduplication.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading

from aiohttp import web

HOSTS = ("pbs.demo.shoal", "video.demo.shoal")


def body_for(path: str) -> tuple[bytes, str]:
    seed = hashlib.sha256(path.encode()).digest()
    if path.endswith(".m3u8"):
        return b"#EXTM3U\n#EXT-X-VERSION:3\n#EXTINF:4.0,\nseg0.ts\n#EXT-X-ENDLIST\n", (
            "application/x-mpegURL"
        )
    if path.endswith(".mp4"):
        return b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + seed * 64, "video/mp4"
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + seed * 32 + b"\xff\xd9", "image/jpeg"


class DemoMediaServer:
    def __init__(self) -> None:
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="demo-media", daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        data, ctype = body_for(request.path)
        return web.Response(body=data, content_type=ctype)

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> DemoMediaServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    @property
    def bases(self) -> tuple[str, str]:
        return (f"http://{HOSTS[0]}:{self.port}", f"http://{HOSTS[1]}:{self.port}")

    @property
    def resolve(self) -> dict[str, str]:
        return dict.fromkeys(HOSTS, "127.0.0.1")

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def _down() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            loop.stop()

        asyncio.run_coroutine_threadsafe(_down(), loop)
        self._thread.join(5)
