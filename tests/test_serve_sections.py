"""``shoal serve``'s sections in-process (aiohttp's test client, no browser): what a page
started before the first seal shows."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from shoal.app.web import SECTIONS, ServeConfig, make_app


async def _get_all(data_dir: Path) -> dict[str, tuple[int, str]]:
    async with TestClient(TestServer(make_app(ServeConfig(data_dir)))) as client:
        out = {}
        for path in [*(f"/section/{name}" for name in SECTIONS), "/chart/hashtags-hour.svg",
                     "/chart/hashtags-day.svg", "/thumb/" + "0" * 64]:
            resp = await client.get(path)
            out[path] = (resp.status, await resp.text())
        return out


def test_a_data_dir_with_nothing_sealed_yet_shows_no_error_boxes(tmp_path: Path) -> None:
    """Started beside a new collection, the page said "Catalog Error: Table with name
    reports does not exist!" in a red box in every section until the first hour was sealed."""
    got = asyncio.run(_get_all(tmp_path))
    for name in ("hours", "hashtags", "images", "media"):
        status, body = got[f"/section/{name}"]
        assert status == 200 and "no hour sealed yet" in body, (name, body)
        assert 'class="error"' not in body, (name, body)
    assert got["/section/deadletters"][0] == 200
    assert got["/chart/hashtags-hour.svg"][0] == 200
    assert got["/chart/hashtags-day.svg"][1].lstrip().startswith("<?xml")
    assert got["/thumb/" + "0" * 64][0] == 404
