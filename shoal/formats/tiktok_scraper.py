"""tiktok-scraper output: its CLI's JSON array, and TikTok web pages it saves.

* The JSON array uses the scraper's own schema -> ``tiktok-scraper`` posts. The CLI names
  its files ``{target}_{Date.now()}.json``; that millisecond stamp is the only collection
  time the file has, so it becomes each payload's ``__retrieved_at``.
* A video or profile page embeds TikTok's own ``itemStruct`` objects in
  ``<script id="__NEXT_DATA__">`` -> ``tiktok-item`` posts, the format Zeeschuimer yields.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from shoal.formats._json_records import iter_records, raw_bytes
from shoal.formats._open import read_head, read_input
from shoal.formats._sniff import CsvHead, JsonHead, TextHead
from shoal.model import Control, DeadLetter, RawPost
from shoal.normalise._platform_rows import iso_or_empty

NAME = "tiktok-scraper"

_MARKER = "__NEXT_DATA__"
_NEXT_DATA = re.compile(rb"<script[^>]*\bid=[\"']__NEXT_DATA__[\"'][^>]*>(.*?)</script>", re.S)
_STAMPED_NAME = re.compile(r"_(\d{13})\.json$")


def sniff(first: object) -> bool:
    if isinstance(first, JsonHead):
        value = first.first
        return (
            first.layout in ("array", "lines")  # an array, or arrays/items one after another
            and isinstance(value, dict)
            and "videoUrl" in value
            and ("authorMeta" in value or "webVideoUrl" in value)
        )
    if isinstance(first, TextHead):
        return _MARKER in first.text
    if isinstance(first, CsvHead):  # a page fragment without a leading tag looks like CSV
        return any(_MARKER in cell for cell in first.header)
    return False


def read(path: Path) -> Iterator[RawPost | DeadLetter | Control]:
    head = read_head(path, 64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith((b"[", b"{")):
        yield from _read_json(path)
    else:
        yield from _read_page(path)


def _read_json(path: Path) -> Iterator[RawPost | DeadLetter]:
    stamp = _STAMPED_NAME.search(path.name)
    collected = iso_or_empty(int(stamp[1])) if stamp else ""
    for record in iter_records(path, NAME):
        if isinstance(record, DeadLetter):
            yield record
            continue
        item = record.value
        item_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(item_id, str | int) or isinstance(item_id, bool) or item_id == "":
            yield DeadLetter(
                "tiktok-scraper record without id", record.source, raw_bytes(record), NAME
            )
            continue
        if collected:
            item.setdefault("__retrieved_at", collected)
        yield RawPost("tiktok", str(item_id), "tiktok-scraper", item, record.source)


def _read_page(path: Path) -> Iterator[RawPost | DeadLetter]:
    page = read_input(path)
    match = _NEXT_DATA.search(page)
    if match is None:
        yield DeadLetter("no __NEXT_DATA__ script in page", str(path), page[:4096], NAME)
        return
    try:
        data = orjson.loads(match[1])
    except orjson.JSONDecodeError as exc:
        yield DeadLetter(f"invalid __NEXT_DATA__ JSON: {exc}", str(path), match[1], NAME)
        return
    items = _page_items(data)
    if not items:
        yield DeadLetter("__NEXT_DATA__ holds no itemStruct or items", str(path), match[1], NAME)
    for index, item in enumerate(items):
        source = f"{path}#{index}"
        item_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(item_id, str | int) or isinstance(item_id, bool) or item_id == "":
            yield DeadLetter("TikTok item without id", source, orjson.dumps(item), NAME)
        else:
            yield RawPost("tiktok", str(item_id), "tiktok-item", item, source)


def _page_items(data: Any) -> list[Any]:
    """``itemInfo.itemStruct`` of a video page, ``items[]`` of a profile page."""
    props = data.get("props") if isinstance(data, dict) else None
    page = props.get("pageProps") if isinstance(props, dict) else None
    if not isinstance(page, dict):
        return []
    items: list[Any] = []
    info = page.get("itemInfo")
    if isinstance(info, dict) and isinstance(info.get("itemStruct"), dict):
        items.append(info["itemStruct"])
    if isinstance(page.get("items"), list):
        items.extend(page["items"])
    return items
