"""A loopback media server for the demo, so ``shoal up --source demo`` fetches real files.

It answers any path with deterministic bytes of the type the extension names (a JPEG, an MP4
or an HLS playlist, recognisable by their magic numbers), so identical URLs give identical
files and the content-addressed store shows its deduplication. Photos are real pictures:
each URL draws one of a few motifs, at its own size and JPEG quality, so different posts
show re-encoded copies of the same picture and ``shoal report images`` has something that
spread to show after the demo.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import threading
from functools import lru_cache

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
    return _photo(seed), "image/jpeg"


MOTIFS = 12  # distinct pictures behind the demo's photo URLs


@lru_cache(maxsize=1024)
def _photo(seed: bytes) -> bytes:
    """A JPEG of motif ``seed[0] % MOTIFS`` (shapes drawn from the motif's own random
    stream), resized and re-encoded as ``seed`` says: near-identical to its motif's others."""
    from PIL import Image, ImageDraw

    rnd = random.Random(seed[0] % MOTIFS)
    img = Image.new("RGB", (128, 128), tuple(rnd.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rnd.randrange(96), rnd.randrange(96)
        box = (x0, y0, x0 + 16 + rnd.randrange(64), y0 + 16 + rnd.randrange(64))
        fill = tuple(rnd.randrange(256) for _ in range(3))
        (draw.ellipse if rnd.random() < 0.5 else draw.rectangle)(box, fill=fill)
    side = 128 - 16 * (seed[1] % 3)
    out = io.BytesIO()
    img.resize((side, side)).save(out, "JPEG", quality=60 + seed[2] % 35)
    return out.getvalue()


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
