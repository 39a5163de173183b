"""Zeeschuimer exports: NDJSON lines wrapping one captured item each.

The envelope (``nav_index, item_id, timestamp_collected, source_platform, ..., data``) says
which platform ``data`` comes from; ``data`` is the platform's own object, passed on as the
payload unchanged except for ``__retrieved_at`` (the capture time, which the normalisers
prefer over the dataflow's clock). Platforms without a normaliser are dead letters, not
guesses: a LinkedIn item read as a tweet would only produce a misleading row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shoal.formats._json_records import Record, raw_bytes, read_records
from shoal.formats._sniff import JsonHead
from shoal.model import Control, DeadLetter, RawPost
from shoal.normalise._platform_rows import iso_or_empty
from shoal.normalise.instagram import media_id

NAME = "zeeschuimer"

# source_platform -> (platform, post format)
_ROUTES: dict[str, tuple[str, str]] = {
    "tiktok.com": ("tiktok", "tiktok-item"),
    "instagram.com": ("instagram", "instagram-media"),
    "twitter.com": ("twitter", "twitter-graphql"),
    "x.com": ("twitter", "twitter-graphql"),
}


def sniff(first: object) -> bool:
    if not isinstance(first, JsonHead):
        return False
    value = first.first
    return (
        isinstance(value, dict)
        and "source_platform" in value
        and isinstance(value.get("data"), dict)
        and ("timestamp_collected" in value or "item_id" in value)
    )


def read(path: Path) -> Iterator[RawPost | DeadLetter | Control]:
    return read_records(path, NAME, _route)


def _item_id(platform: str, data: dict[str, Any]) -> str:
    if platform == "twitter":
        value = data.get("rest_id")
        if not value:
            legacy = data.get("legacy")
            value = legacy.get("id_str") if isinstance(legacy, dict) else None
    elif platform == "instagram":
        value = media_id(data)
    else:
        value = data.get("id")
    if value is None or isinstance(value, dict | list | bool):
        return ""
    return str(value)


def _route(record: Record) -> RawPost | DeadLetter:
    envelope = record.value
    data = envelope.get("data") if isinstance(envelope, dict) else None
    if not isinstance(data, dict):
        return DeadLetter(
            "not a Zeeschuimer item (no data object)", record.source, raw_bytes(record), NAME
        )
    where = str(envelope.get("source_platform", "")).lower().removeprefix("www.")
    route = _ROUTES.get(where)
    if route is None:
        return DeadLetter(
            f"unknown source_platform {where!r}", record.source, raw_bytes(record), NAME
        )
    platform, fmt = route
    if platform == "twitter" and data.get("__typename") == "TweetWithVisibilityResults":
        inner = data.get("tweet")  # a wrapper X adds around tweets with reply limits
        data = inner if isinstance(inner, dict) else data
    post_id = _item_id(platform, data)
    if not post_id:
        return DeadLetter(f"{platform} item without an id", record.source, raw_bytes(record), NAME)
    collected = iso_or_empty(envelope.get("timestamp_collected"))
    if collected:
        data["__retrieved_at"] = collected
    return RawPost(platform, post_id, fmt, data, record.source)
