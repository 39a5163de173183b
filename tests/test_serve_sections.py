"""``shoal serve``'s sections in-process (aiohttp's test client, no browser): what a page
started before the first seal shows."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
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


async def _status(data_dir: Path, path: str, host: str, listen: str = "127.0.0.1") -> int:
    config = ServeConfig(data_dir, listen=listen)
    async with TestClient(TestServer(make_app(config))) as client:
        resp = await client.get(path, headers={"Host": host})
        return resp.status


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "127.0.0.1",
                                  "LOCALHOST."])
def test_the_page_answers_to_its_own_names(tmp_path: Path, host: str) -> None:
    assert asyncio.run(_status(tmp_path, "/section/hours", host)) == 200


@pytest.mark.parametrize("path", ["/", "/section/hours", "/chart/hashtags-day.svg", "/page.js"])
def test_another_host_name_is_refused_against_dns_rebinding(tmp_path: Path, path: str) -> None:
    """A web page at evil.example whose name is re-pointed at 127.0.0.1 (DNS rebinding) read
    the whole page, sections included, from the visitor's browser: the server answered any
    Host header, so the same-origin rule (which compares names, not addresses) let it."""
    assert asyncio.run(_status(tmp_path, path, "evil.example:8080")) == 421
    assert asyncio.run(_status(tmp_path, path, "")) == 421


def test_listening_elsewhere_takes_addresses_and_the_listen_name(tmp_path: Path) -> None:
    assert asyncio.run(_status(tmp_path, "/", "192.168.1.7:8080", "0.0.0.0")) == 200
    assert asyncio.run(_status(tmp_path, "/", "box.lan:8080", "box.lan")) == 200
    assert asyncio.run(_status(tmp_path, "/", "evil.example", "0.0.0.0")) == 421


def test_a_slow_dead_letter_count_is_stopped_like_the_queries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dead-letter section reads files, not the catalog, and had no time limit: a slow
    disk (or months of dead letters) held its request open, and the page's refresh, which
    waits for every section, never finished, so no section refreshed again."""
    from connectors.store import report_data

    def slow(_data_dir: Path, _day: str | None = None) -> dict[str, int]:
        time.sleep(3)
        return {"invalid JSON": 1}

    monkeypatch.setattr(report_data, "deadletters_by_reason", slow)

    async def get() -> tuple[float, str]:
        config = ServeConfig(tmp_path, query_timeout=0.3)
        async with TestClient(TestServer(make_app(config))) as client:
            start = time.monotonic()
            resp = await client.get("/section/deadletters")
            return time.monotonic() - start, await resp.text()

    took, body = asyncio.run(get())
    assert took < 2 and 'class="error"' in body and "took longer than 0.3 s" in body, body


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_out_of_range_is_a_user_error(tmp_path: Path, port: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """``--port 70000`` was exit 1 with ``OverflowError: bind(): ...``, as for a crash."""
    from shoal.app.cli import main

    assert main(["serve", "--data-dir", str(tmp_path), "--port", port]) == 2
    assert capsys.readouterr().err == "shoal: error: --port must be between 0 and 65535\n"


def test_a_data_dir_whose_name_is_not_utf8_is_served(tmp_path: Path) -> None:
    """A folder named in Latin-1 (``caf\\xe9``) made the page a 500: its name, in the title and
    heading, held a surrogate that the UTF-8 response cannot carry."""
    data_dir = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9"))
    data_dir.mkdir()

    async def get() -> tuple[int, str]:
        async with TestClient(TestServer(make_app(ServeConfig(data_dir)))) as client:
            resp = await client.get("/")
            return resp.status, await resp.text()

    status, body = asyncio.run(get())
    assert status == 200 and "caf\ufffd" in body
