"""Test pictures made with Pillow: an original with structure, its copies, and a stranger."""

from __future__ import annotations

import asyncio
import io
import threading

from aiohttp import web
from PIL import Image, ImageDraw

from tests.loopback_server import serve_on_loopback

HOST = "img.test"  # the name posts use for the picture server; resolved to 127.0.0.1


def _encode(img: Image.Image, fmt: str = "JPEG", **params: int) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **params)
    return out.getvalue()


def original(size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A gradient sky, a sun, a house and a road: large shapes a perceptual hash sees."""
    w, h = size
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    for y in range(h):  # vertical gradient
        draw.line([(0, y), (w, y)], fill=(40 + 150 * y // h, 90 + 100 * y // h, 200 - 120 * y // h))
    draw.ellipse((w * 0.65, h * 0.08, w * 0.85, h * 0.35), fill=(250, 220, 60))
    draw.rectangle((w * 0.12, h * 0.45, w * 0.45, h * 0.85), fill=(150, 60, 40))
    draw.polygon([(w * 0.08, h * 0.45), (w * 0.285, h * 0.22), (w * 0.49, h * 0.45)],
                 fill=(90, 30, 30))
    draw.polygon([(w * 0.55, h), (w * 0.7, h * 0.5), (w * 0.78, h * 0.5), (w * 0.95, h)],
                 fill=(60, 60, 60))
    return img


def stranger(size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A different picture: diagonal stripes and a dark disc on the left."""
    w, h = size
    img = Image.new("RGB", size, (230, 230, 230))
    draw = ImageDraw.Draw(img)
    for k in range(-h, w, 60):
        draw.polygon([(k, 0), (k + 30, 0), (k + 30 + h, h), (k + h, h)], fill=(20, 120, 60))
    draw.ellipse((w * 0.05, h * 0.3, w * 0.4, h * 0.9), fill=(10, 10, 40))
    return img


def variants() -> dict[str, bytes]:
    """The original (PNG) and its copies: JPEG quality 60, half size, a 5 % crop; a stranger."""
    img = original()
    w, h = img.size
    dx, dy = int(w * 0.05 / 2), int(h * 0.05 / 2)
    return {
        "original.png": _encode(img, "PNG"),
        "q60.jpg": _encode(img, quality=60),
        "half.jpg": _encode(img.resize((w // 2, h // 2), Image.Resampling.LANCZOS), quality=90),
        "crop.jpg": _encode(img.crop((dx, dy, w - dx, h - dy)), quality=90),
        "stranger.jpg": _encode(stranger(), quality=90),
    }


class PictureServer:
    """Serves ``variants()`` by name on 127.0.0.1; counts requests per path."""

    def __init__(self) -> None:
        self.files = variants()
        self.hits: dict[str, int] = {}
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.path.lstrip("/")
        self.hits[name] = self.hits.get(name, 0) + 1
        if name not in self.files:
            return web.Response(status=404)
        ctype = "image/png" if name.endswith(".png") else "image/jpeg"
        return web.Response(body=self.files[name], content_type=ctype)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/{name}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        self.port = self.loop.run_until_complete(serve_on_loopback(runner, ["127.0.0.1"]))
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> PictureServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def url(self, name: str) -> str:
        return f"http://{HOST}:{self.port}/{name}"
